"""ProxyCommand from ~/.ssh/config: the SSH connection goes through a
command (tests/ssh/relay.py, a small nc), with OpenSSH's tokens; a failing
command is one line, and the command never outlives circusctl."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import Client, SSHServer
from tests.ssh.test_auth import write_config

pytestmark = pytest.mark.timeout(60)

RELAY = Path(__file__).with_name("relay.py")
SLEEPER = "[watcher:sleeper]\ncmd = sleep 600\n"
TIMEOUT = 3.0


def relay(log: Path, *words: str) -> str:
    """A ProxyCommand line that relays to %h:%p and logs its arguments."""
    return " ".join([sys.executable, str(RELAY), "%h", "%p", str(log), *words])


def proxied_host(client: Client, sshd: SSHServer, proxy_command: str) -> None:
    """``viaproxy``: the test sshd, reached through ``proxy_command``."""
    write_config(
        client,
        f"Host viaproxy\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {client.key}\n  ProxyCommand {proxy_command}\n",
    )


def logged(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_proxy_command_carries_the_connection(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(SLEEPER)
    log = tmp_path / "relay.log"
    proxied_host(client, sshd, relay(log))

    result = client.run("--ssh", "viaproxy", "--endpoint", daemon.endpoint, "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")
    (started,) = logged(log)
    assert started["argv"] == ["127.0.0.1", str(sshd.port), str(log)]
    assert gone(int(str(started["pid"])))


def test_proxy_command_tokens_take_user_and_port_from_the_target(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(SLEEPER)
    log = tmp_path / "relay.log"
    # The config's Port and User are wrong on purpose: the target's win.
    write_config(
        client,
        "Host viaproxy\n  HostName 127.0.0.1\n  Port 1\n  User nobody\n"
        f"  IdentityFile {client.key}\n"
        f"  ProxyCommand {relay(log, '%r', '%n', '%%', '100%%h')}\n",
    )

    result = client.run(
        "--ssh", f"root@viaproxy:{sshd.port}", "--endpoint", daemon.endpoint, "list"
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")
    (started,) = logged(log)
    assert started["argv"] == [
        "127.0.0.1", str(sshd.port), str(log), "root", "viaproxy", "%", "100%h",
    ]  # fmt: skip


def test_a_failing_proxy_command_is_one_line_with_its_reason(
    client: Client, sshd: SSHServer
) -> None:
    proxied_host(client, sshd, "sh -c 'echo no route to %h >&2; exit 3'")

    result = client.run(
        "--ssh", "viaproxy", "--timeout", str(TIMEOUT), "--endpoint",
        "ipc:///nowhere.sock", "status",
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "via ProxyCommand `sh -c 'echo no route to 127.0.0.1 >&2; exit 3'`" in (
        result.stderr
    )
    assert result.stderr.rstrip().endswith(
        "it exited with status 3: no route to 127.0.0.1"
    )
    assert result.elapsed < TIMEOUT


def test_a_silent_proxy_command_fails_within_the_timeout_and_is_ended(
    client: Client, sshd: SSHServer, silent_host: int, tmp_path: Path
) -> None:
    log = tmp_path / "relay.log"
    proxied_host(client, sshd, relay(log).replace("%p", str(silent_host)))

    result = client.run(
        "--ssh", "viaproxy", "--timeout", str(TIMEOUT), "--endpoint",
        "ipc:///nowhere.sock", "status",
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no SSH handshake within {TIMEOUT:g} s" in result.stderr
    assert result.elapsed < TIMEOUT + 2
    (started,) = logged(log)
    assert gone(int(str(started["pid"])))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["int", "kill"])
def test_the_proxy_command_never_outlives_circusctl(
    client: Client,
    sshd: SSHServer,
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    daemon = start_daemon(SLEEPER)
    log = tmp_path / "relay.log"
    proxied_host(client, sshd, relay(log))
    listener = client.popen(
        "--ssh", "viaproxy", "--endpoint", daemon.endpoint, "listen"
    )
    assert listener.stderr is not None
    assert "listening on" in listener.stderr.readline()
    (started,) = logged(log)
    pid = int(str(started["pid"]))
    time.sleep(0.5)  # nothing in flight that would make the relay fail
    assert not gone(pid)

    listener.send_signal(how)
    listener.communicate(timeout=10)

    wait_for(lambda: gone(pid), timeout=5, what="the relay to end")
    assert listener.returncode == (0 if how == signal.SIGINT else -signal.SIGKILL)


def test_an_unknown_token_in_proxy_command_is_a_usage_error(
    client: Client, sshd: SSHServer
) -> None:
    proxied_host(client, sshd, "nc %h %p %Z")

    result = client.run("--ssh", "viaproxy", "--endpoint", "ipc:///x.sock", "list")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "ssh config for viaproxy ProxyCommand: unknown token %Z" in result.stderr


def test_proxy_command_and_proxy_jump_together_are_refused(client: Client) -> None:
    write_config(client, "Host both\n  ProxyJump jump\n  ProxyCommand nc %h %p\n")

    result = client.run("--ssh", "both", "--endpoint", "ipc:///x.sock", "list")

    assert result.returncode == 2
    assert "sets both ProxyJump and ProxyCommand" in result.stderr
