"""One command on many hosts: three daemons behind the same sshd stand in
for three hosts (each hosts-file line names its own endpoint)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import Client, SSHServer

pytestmark = pytest.mark.timeout(90)

SLEEPER = "[watcher:sleeper]\ncmd = sleep 600\n"
TIMEOUT = 3.0


def hosts_file(client: Client, daemons: list[Daemon], extra: str = "") -> Path:
    path = client.home / "hosts"
    lines = [
        f"{client.target()} {daemon.endpoint}  # {i}"
        for i, daemon in enumerate(daemons)
    ]
    path.write_text("# the fleet\n" + "\n".join(lines) + "\n" + extra)
    return path


def prefixed(output: str, label: str) -> list[str]:
    return [
        line[len(label) + 2 :]
        for line in output.splitlines()
        if line.startswith(label + ": ")
    ]


def test_a_command_runs_on_every_host_and_exits_0_when_all_succeed(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(3, SLEEPER)
    path = hosts_file(client, fleet)

    result = client.run(
        "--ssh-hosts", str(path), "--ssh-keyfile", str(client.key), "list"
    )

    assert (result.returncode, result.stderr) == (0, "")
    for daemon in fleet:
        assert prefixed(result.stdout, f"{client.target()} {daemon.endpoint}") == [
            "sleeper"
        ]


def test_one_host_down_fails_the_run_but_not_the_others(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(3, SLEEPER)
    fleet[1].stop()
    path = hosts_file(client, fleet)

    result = client.run(
        "--ssh-hosts", str(path), "--ssh-keyfile", str(client.key),
        "--timeout", str(TIMEOUT), "status",
    )  # fmt: skip

    labels = [f"{client.target()} {daemon.endpoint}" for daemon in fleet]
    assert result.returncode == 1
    assert prefixed(result.stdout, labels[0])[1].startswith("sleeper  active  1")
    assert prefixed(result.stdout, labels[2])[1].startswith("sleeper  active  1")
    assert prefixed(result.stdout, labels[1]) == []
    errors = prefixed(result.stderr, labels[1])
    assert len(errors) == 1 and "could not connect to" in errors[0]
    assert result.stderr.splitlines()[-1] == (
        f"circusctl: error: 1 of 3 hosts failed: {labels[1]} (exit 1)"
    )
    assert result.elapsed < TIMEOUT


def test_a_silent_host_does_not_stall_the_others(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]], silent_host: int
) -> None:
    fleet = start_fleet(2, SLEEPER)

    result = client.run(
        "--ssh", f"{client.target()}", "--ssh", f"root@127.0.0.1:{silent_host}",
        "--ssh-keyfile", str(client.key), "--timeout", str(TIMEOUT),
        "--endpoint", fleet[0].endpoint, "numwatchers",
    )  # fmt: skip

    assert result.returncode == 1
    assert prefixed(result.stdout, client.target()) == ["1"]
    (error,) = prefixed(result.stderr, f"root@127.0.0.1:{silent_host}")
    assert "no SSH handshake within 3 s" in error
    assert result.elapsed < TIMEOUT + 2


def test_a_usage_error_fails_every_host_before_connecting(
    client: Client, sshd: SSHServer, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, SLEEPER)
    path = hosts_file(client, fleet)
    logins = sshd.log.count("Accepted publickey")

    result = client.run("--ssh-hosts", str(path), "signal", "sleeper", "NOSUCHSIG")

    assert result.returncode == 2
    for daemon in fleet:
        (error,) = prefixed(result.stderr, f"{client.target()} {daemon.endpoint}")
        assert "invalid SIGNUM" in error
    assert sshd.log.count("Accepted publickey") == logins


def test_an_unknown_option_is_reported_once(client: Client) -> None:
    path = client.home / "hosts"
    path.write_text(f"{client.target()}\n{client.target()}\n")

    result = client.run("--ssh-hosts", str(path), "status", "--nosuch")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--nosuch" in result.stderr


def test_errors_from_the_daemon_keep_their_exit_code_on_every_host(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, SLEEPER)
    path = hosts_file(client, fleet)

    result = client.run(
        "--ssh-hosts", str(path), "--ssh-keyfile", str(client.key), "stop", "nosuch"
    )

    assert result.returncode == 3
    assert "2 of 2 hosts failed" in result.stderr


def test_a_bad_hosts_file_line_is_named(client: Client) -> None:
    path = client.home / "hosts"
    path.write_text("root@127.0.0.1:22\nroot@:x ipc:///a.sock\n")

    result = client.run("--ssh-hosts", str(path), "status")

    assert result.returncode == 2
    assert f"hosts file {path} line 2" in result.stderr


def test_listen_on_two_hosts_prints_both_streams(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, SLEEPER)
    path = hosts_file(client, fleet)
    listener = client.popen(
        "--ssh-hosts", str(path), "--ssh-keyfile", str(client.key),
        "listen", "--count", "1", "watcher.sleeper.",
    )  # fmt: skip
    assert listener.stderr is not None
    for _ in fleet:
        assert "listening on" in listener.stderr.readline()

    # A subscriber misses what is published before its subscription has
    # reached the daemon, so keep making events until it has seen enough.
    deadline = time.monotonic() + 30
    while listener.poll() is None and time.monotonic() < deadline:
        for daemon in fleet:
            daemon.ok("incr", name="sleeper", waiting=True)
            daemon.ok("decr", name="sleeper", waiting=True)
    out, _ = listener.communicate(timeout=10)

    assert listener.returncode == 0
    for daemon in fleet:
        (line,) = prefixed(out, f"{client.target()} {daemon.endpoint}")
        assert " watcher.sleeper." in line


def test_ctrl_c_ends_listen_on_every_host(
    client: Client, sshd: SSHServer, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, SLEEPER)
    path = hosts_file(client, fleet)
    before = {process.pid for process in sshd.connections()}
    listener = client.popen(
        "--ssh-hosts", str(path), "--ssh-keyfile", str(client.key), "listen"
    )
    assert listener.stderr is not None
    for _ in fleet:
        assert "listening on" in listener.stderr.readline()

    listener.send_signal(signal.SIGINT)
    _, err = listener.communicate(timeout=10)

    assert (listener.returncode, err) == (0, "")
    wait_for(
        lambda: not ({p.pid for p in sshd.connections()} - before),
        timeout=5,
        what="both sshd sessions to end",
    )


def test_ctrl_c_during_a_handshake_ends_the_run_at_once(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]], silent_host: int
) -> None:
    (daemon,) = start_fleet(1, SLEEPER)
    command = client.popen(
        "--ssh", client.target(), "--ssh", f"root@127.0.0.1:{silent_host}",
        "--ssh-keyfile", str(client.key), "--timeout", "30",
        "--endpoint", daemon.endpoint, "listen",
    )  # fmt: skip
    assert command.stderr is not None
    assert "listening on" in command.stderr.readline()

    started = time.monotonic()
    command.send_signal(signal.SIGINT)
    command.communicate(timeout=20)

    assert command.returncode == 0
    assert time.monotonic() - started < 5  # not the 30 s handshake timeout
