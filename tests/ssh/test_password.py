"""Passwords: when the server takes them and no key works, circusctl asks on
the terminal as OpenSSH does, never echoes, never reads stdin, honours
ssh_config's PasswordAuthentication, KbdInteractiveAuthentication,
PreferredAuthentications and BatchMode, and without a terminal fails the
host in one line instead of waiting. A second sshd (password_sshd) takes
passwords through PAM, for a real user that has one (password_user)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import (
    CIRCUSCTL,
    Client,
    PasswordUser,
    SSHServer,
    run_on_terminal,
)
from tests.ssh.test_auth import write_config
from tests.terminal import terminal

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 3.0
NO_KBD = "Host *\n  KbdInteractiveAuthentication no\n"


@pytest.fixture
def owned_daemon(
    start_daemon: Callable[..., Daemon], password_user: PasswordUser
) -> Daemon:
    """A daemon whose control socket the password user may use."""
    return start_daemon(
        "[circus]\nendpoint = ipc://{dir}/ctl.sock\n"
        "pubsub_endpoint = ipc://{dir}/pub.sock\n"
        f"endpoint_owner = {password_user.name}\n\n"
        "[watcher:sleeper]\ncmd = sleep 600\n"
    )


@pytest.fixture
def pw_client(client: Client, password_sshd: SSHServer) -> Client:
    """The client, also trusting the password sshd's host key."""
    with client.known_hosts.open("a") as known_hosts:
        known_hosts.write(password_sshd.known_hosts_line)
    return client


def target(user: PasswordUser, server: SSHServer) -> str:
    return f"{user.name}@127.0.0.1:{server.port}"


def test_a_password_is_asked_on_the_terminal_and_never_echoed(
    pw_client: Client,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    owned_daemon: Daemon,
) -> None:
    write_config(pw_client, NO_KBD)
    prompt = f"{password_user.name}@127.0.0.1's password: "

    seen = run_on_terminal(
        pw_client,
        ["--ssh", target(password_user, password_sshd), "--timeout", str(TIMEOUT),
         "--endpoint", owned_daemon.endpoint, "list"],
        prompt=prompt,
        answers=["not it\n", password_user.password + "\n"],
        delay=TIMEOUT + 0.5,  # thinking time does not count against --timeout
    )  # fmt: skip

    assert seen.count(prompt) == 2
    assert "Permission denied, please try again." in seen
    assert password_user.password not in seen and "not it" not in seen
    assert seen.rstrip().endswith("sleeper")
    assert f"Accepted password for {password_user.name}" in password_sshd.log


def test_keyboard_interactive_questions_are_asked_on_the_terminal(
    pw_client: Client,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    owned_daemon: Daemon,
) -> None:
    prompt = f"({password_user.name}@127.0.0.1) Password: "

    seen = run_on_terminal(
        pw_client,
        ["--ssh", target(password_user, password_sshd),
         "--endpoint", owned_daemon.endpoint, "list"],
        prompt=prompt,
        answers=[password_user.password + "\n"],
    )  # fmt: skip

    assert seen.count(prompt) == 1
    assert password_user.password not in seen
    assert seen.rstrip().endswith("sleeper")
    accepted = f"Accepted keyboard-interactive/pam for {password_user.name}"
    assert accepted in password_sshd.log


def test_three_wrong_passwords_fail_in_one_line(
    pw_client: Client, password_sshd: SSHServer, password_user: PasswordUser
) -> None:
    write_config(pw_client, NO_KBD)
    prompt = "'s password: "

    seen = run_on_terminal(
        pw_client,
        ["--ssh", target(password_user, password_sshd), "--endpoint",
         "ipc:///nowhere.sock", "status"],
        prompt=prompt,
        answers=["wrong 1\n", "wrong 2\n", "wrong 3\n"],
        status=1,
    )  # fmt: skip

    last = seen.strip().splitlines()[-1]
    assert last.startswith("circusctl: error: ssh ")
    assert f"Authentication failed for {password_user.name}@127.0.0.1" in last
    assert "password: wrong password (3 attempts)" in last


def test_without_a_terminal_a_password_host_fails_at_once(
    pw_client: Client, password_sshd: SSHServer, password_user: PasswordUser
) -> None:
    result = pw_client.run(
        "--ssh", target(password_user, password_sshd), "--timeout", "20",
        "--endpoint", "ipc:///nowhere.sock", "status",
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no key to offer" in result.stderr
    assert "keyboard-interactive: no terminal to ask on" in result.stderr
    assert "password: no terminal to ask on" in result.stderr
    assert result.elapsed < 5  # not the 20 s of --timeout


def test_fan_out_without_a_terminal_fails_only_the_password_host(
    pw_client: Client,
    sshd: SSHServer,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    owned_daemon: Daemon,
) -> None:
    with_key = pw_client.target()
    with_password = target(password_user, password_sshd)

    result = pw_client.run(
        "--ssh", with_key, "--ssh", with_password, "--ssh-keyfile",
        str(pw_client.key), "--timeout", "20", "--endpoint",
        owned_daemon.endpoint, "list",
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stdout == f"{with_key}: sleeper\n"
    errors = result.stderr.splitlines()
    assert len(errors) == 2, result.stderr
    assert errors[0].startswith(f"{with_password}: circusctl: error: ")
    assert "password: no terminal to ask on" in errors[0]
    assert errors[1] == (
        f"circusctl: error: 1 of 2 hosts failed: {with_password} (exit 1)"
    )
    assert result.elapsed < 5


def test_fan_out_on_a_terminal_asks_each_host_in_turn(
    pw_client: Client,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    owned_daemon: Daemon,
) -> None:
    write_config(pw_client, NO_KBD)
    hosts = pw_client.home / "hosts"
    line = f"{target(password_user, password_sshd)} {owned_daemon.endpoint}\n"
    hosts.write_text(line + line.replace("/ctl.sock", "/./ctl.sock"))
    prompt = f"{password_user.name}@127.0.0.1's password: "

    seen = run_on_terminal(
        pw_client,
        ["--ssh-hosts", str(hosts), "list"],
        prompt=prompt,
        answers=[password_user.password + "\n"] * 2,
    )  # fmt: skip

    assert seen.count(prompt) == 2
    assert seen.count(": sleeper") == 2
    assert password_user.password not in seen


@pytest.mark.parametrize(
    "setting",
    [
        "PasswordAuthentication no\n  KbdInteractiveAuthentication no",
        "PreferredAuthentications publickey",
        "BatchMode yes",
    ],
)
def test_ssh_config_can_forbid_asking(
    pw_client: Client,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    setting: str,
) -> None:
    write_config(pw_client, f"Host *\n  {setting}\n")

    seen = run_on_terminal(
        pw_client,
        ["--ssh", target(password_user, password_sshd), "--endpoint",
         "ipc:///nowhere.sock", "status"],
        prompt="'s password: ",
        answers=[],
        status=1,
    )  # fmt: skip

    assert "Password: " not in seen  # keyboard-interactive's question
    last = seen.strip().splitlines()[-1]
    assert "password: turned off in ssh_config" in last
    assert "keyboard-interactive: turned off in ssh_config" in last


def test_top_on_several_hosts_puts_its_screen_away_for_a_password(
    pw_client: Client,
    password_sshd: SSHServer,
    password_user: PasswordUser,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(
        "[circus]\nendpoint = ipc://{dir}/ctl.sock\n"
        "pubsub_endpoint = ipc://{dir}/pub.sock\n"
        "stats_endpoint = ipc://{dir}/stats.sock\n"
        f"endpoint_owner = {password_user.name}\n\n"
        "[watcher:sleeper]\ncmd = sleep 600\n"
    )
    write_config(pw_client, NO_KBD)
    with_key, with_password = pw_client.target(), target(password_user, password_sshd)
    prompt = f"{password_user.name}@127.0.0.1's password:"  # tmux cuts the space
    command = [
        str(CIRCUSCTL), "--ssh", with_key, "--ssh", with_password,
        "--ssh-keyfile", str(pw_client.key), "--endpoint", daemon.endpoint, "top",
    ]  # fmt: skip
    pid = str(daemon.pids("sleeper")[0])

    environment = {"HOME": str(pw_client.home), "SSH_AUTH_SOCK": ""}
    with terminal(command, env=environment) as pane:
        asked = wait_for(
            lambda: prompt in (text := pane.screen()) and text,
            timeout=30,
            what="the password question",
        )
        pane.tmux("send-keys", "-t", "t", "-l", password_user.password)
        pane.keys("Enter")
        screen = wait_for(
            lambda: (text := pane.screen()).count(pid) == 2 and text,
            timeout=30,
            what="both hosts' processes on top's screen",
        )
        pane.keys("q")
        status = wait_for(pane.exit_status, timeout=10, what="q to end top")

    assert "circusctl top - 2 hosts" not in asked  # the screen was put away
    assert password_user.password not in asked + screen
    assert f"== {with_key} ==" in screen and f"== {with_password} ==" in screen
    assert status == "0"
