"""The pure parts of circusctl --ssh, without a server: targets, ssh_config
resolution, known_hosts decisions, hosts files, and the paramiko versions
the ipc forwarding is known to work with."""

from __future__ import annotations

import io
from pathlib import Path

import paramiko
import pytest

from circusd.cli.remote import collect_hosts, remote_endpoint_problem
from circusd.client.ssh import (
    HostKeyMismatch,
    HostKeyUnknown,
    HostSettings,
    InvalidTarget,
    SSHTarget,
    parse_target,
    resolve,
    resolve_chain,
)
from circusd.client.ssh.hostkeys import (
    check_host_key,
    fingerprint,
    known_keys,
    preferred_key_types,
)
from circusd.client.ssh.target import new_config
from circusd.client.ssh.transport import PARAMIKO_TESTED, paramiko_version

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", SSHTarget("host")),
        ("svc@host", SSHTarget("host", "svc")),
        ("svc@host:2222", SSHTarget("host", "svc", 2222)),
        ("a@b@host:22", SSHTarget("host", "a@b", 22)),
        ("[::1]:2222", SSHTarget("::1", None, 2222)),
        ("::1", SSHTarget("::1")),
    ],
)
def test_targets_are_parsed_like_ssh(text: str, expected: SSHTarget) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("@host", "empty user"),
        ("host:0", "port must be between"),
        ("host:99999", "port must be between"),
        ("host:ssh", "port must be between"),
        ("", "expected [USER@]HOST[:PORT]"),
        ("[::1", "expected [USER@]HOST[:PORT]"),
        ("ho st", "expected [USER@]HOST[:PORT]"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(InvalidTarget, match=problem.replace("[", r"\[")):
        parse_target(text)


def config(text: str) -> paramiko.SSHConfig:
    parsed = new_config()
    parsed.parse(io.StringIO(text))
    return parsed


FLEET_CONFIG = """\
Host web1
    HostName 10.0.0.5
    User deploy
    Port 2200
    IdentityFile ~/.ssh/fleet_key
    IdentitiesOnly yes
    StrictHostKeyChecking accept-new

Host inner
    HostName 10.0.1.9
    ProxyJump bastion,web1

Host bastion
    HostName 192.0.2.1
    ProxyJump gate

Host loop1
    ProxyJump loop2
Host loop2
    ProxyJump loop1
"""


def test_a_host_alias_supplies_hostname_user_port_and_keys() -> None:
    settings = resolve(parse_target("web1"), config(FLEET_CONFIG))

    assert (settings.hostname, settings.user, settings.port) == (
        "10.0.0.5",
        "deploy",
        2200,
    )
    assert settings.identity_files[0].endswith("/.ssh/fleet_key")
    assert "~" not in settings.identity_files[0]
    assert settings.identities_only and settings.accept_new
    assert settings.known_hosts_name == "[10.0.0.5]:2200"


def test_user_and_port_in_the_target_win_over_the_config() -> None:
    settings = resolve(parse_target("ops@web1:22"), config(FLEET_CONFIG))

    assert (settings.user, settings.port, settings.known_hosts_name) == (
        "ops",
        22,
        "10.0.0.5",
    )


def test_proxy_jump_chains_resolve_in_connection_order() -> None:
    chain = resolve_chain(parse_target("inner"), config(FLEET_CONFIG))

    assert [host.target.host for host in chain] == ["gate", "bastion", "web1", "inner"]


def test_a_proxy_jump_loop_is_refused() -> None:
    with pytest.raises(InvalidTarget, match="loops"):
        resolve_chain(parse_target("loop1"), config(FLEET_CONFIG))


def test_proxy_command_tokens_expand_as_openssh_does() -> None:
    text = "Host x\n  HostName 10.0.0.9\n  User deploy\n  Port 2200\n"
    text += "  ProxyCommand ssh -W %h:%p -l %r gate # %n %%h ~\n"

    from_config = resolve(parse_target("x"), config(text))
    from_target = resolve(parse_target("ops@x:2222"), config(text))

    assert from_config.proxy_command == "ssh -W 10.0.0.9:2200 -l deploy gate # x %h ~"
    assert from_target.proxy_command == "ssh -W 10.0.0.9:2222 -l ops gate # x %h ~"


def test_proxy_command_none_is_no_proxy() -> None:
    text = "Host x\n  ProxyCommand none\n\nHost *\n  ProxyCommand nc %h %p\n"

    assert resolve(parse_target("x"), config(text)).proxy_command is None


def settings_with(known_hosts: Path, accept_new: bool = False) -> HostSettings:
    text = (
        "Host h\n  HostName 127.0.0.1\n  Port 2222\n"
        f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile none\n"
    )
    return resolve(parse_target("h"), config(text), accept_new=accept_new)


KEY = paramiko.ECDSAKey.generate()
OTHER = paramiko.ECDSAKey.generate()


def test_a_known_key_is_accepted(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        f"# comment\n[127.0.0.1]:2222 {KEY.get_name()} {KEY.get_base64()}\n"
    )
    settings = settings_with(known)

    check_host_key(settings, KEY, known_keys(settings))


def test_an_unknown_key_is_refused_with_its_fingerprint(tmp_path: Path) -> None:
    settings = settings_with(tmp_path / "known_hosts")

    with pytest.raises(HostKeyUnknown) as caught:
        check_host_key(settings, KEY, [])

    assert fingerprint(KEY) in str(caught.value)
    assert "ssh-keyscan -p 2222 127.0.0.1" in str(caught.value)


def test_accept_new_appends_one_line_and_says_so(tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    settings = settings_with(known, accept_new=True)
    notices: list[str] = []

    check_host_key(settings, KEY, [], notices.append)

    assert (
        known.read_text() == f"[127.0.0.1]:2222 {KEY.get_name()} {KEY.get_base64()}\n"
    )
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    assert notices == [f"added host key for [127.0.0.1]:2222 ({KEY.get_name()} "
                       f"{fingerprint(KEY)}) to {known}"]  # fmt: skip


def test_a_key_of_another_type_than_the_known_one_is_a_mismatch(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    ed25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIGxY2pG0HqZ8wWbQm5yE8o8mVv6bTgkXoqYb0dXnq0vD"
    known.write_text(f"[127.0.0.1]:2222 ssh-ed25519 {ed25519}\n")
    settings = settings_with(known, accept_new=True)

    with pytest.raises(HostKeyMismatch, match=f"{known}:1"):
        check_host_key(settings, KEY, known_keys(settings))


def test_a_changed_key_of_the_same_type_is_a_mismatch_even_with_accept_new(
    tmp_path: Path,
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:2222 {OTHER.get_name()} {OTHER.get_base64()}\n")
    settings = settings_with(known, accept_new=True)

    with pytest.raises(HostKeyMismatch, match="host key mismatch"):
        check_host_key(settings, KEY, known_keys(settings))
    assert KEY.get_base64() not in known.read_text()


def test_known_key_types_are_asked_for_first(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:2222 {KEY.get_name()} {KEY.get_base64()}\n")
    settings = settings_with(known)
    offered = ["ssh-ed25519", KEY.get_name(), "rsa-sha2-512"]

    assert preferred_key_types(known_keys(settings), offered)[0] == KEY.get_name()


def test_hosts_are_labelled_by_target_and_by_endpoint_when_targets_repeat(
    tmp_path: Path,
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "a@h:22 ipc:///one.sock\n# comment\n\na@h:22 ipc:///two.sock # x\n"
    )

    found = collect_hosts(["b@other"], str(hosts))

    assert [host.label for host in found] == [
        "b@other",
        "a@h:22 ipc:///one.sock",
        "a@h:22 ipc:///two.sock",
    ]
    assert found[2].endpoint == "ipc:///two.sock"


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "lists no host"), ("h one two three\n", "line 1: expected")],
)
def test_bad_hosts_files_are_named(tmp_path: Path, text: str, problem: str) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(text)

    with pytest.raises(InvalidTarget, match=problem):
        collect_hosts([], str(hosts))


def test_only_absolute_ipc_paths_can_be_used_remotely() -> None:
    assert remote_endpoint_problem("ipc://run/c.sock") is not None
    assert remote_endpoint_problem("ipc:///run/c.sock") is None
    assert remote_endpoint_problem("tcp://127.0.0.1:5555") is None


def test_the_installed_paramiko_is_in_the_range_ipc_forwarding_was_tested_on() -> None:
    """TunnelTransport adds the socket path by overriding a private paramiko
    method. A paramiko outside PARAMIKO_TESTED must be tried against a real
    sshd (tests/ssh) before the range is widened."""
    low, high = PARAMIKO_TESTED

    assert low <= paramiko_version()[:2] < high


def test_circusctl_without_ssh_does_not_import_paramiko() -> None:
    """paramiko takes about 0.2 s to import: only --ssh should pay for it."""
    import subprocess
    import sys

    probe = "import sys, circusd.cli.circusctl; print('paramiko' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )

    assert (result.stdout, result.stderr) == ("False\n", "")
