"""circusctl --ssh against real daemons behind a real sshd: every command
works on ipc and tcp endpoints, replies of several MB arrive intact, and
nothing is left running after the client ends, however it ends."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from circusd.client import CircusClient, Connector, connect_socket, subscribe
from circusd.client.ssh import KeyRing, SSHOptions, SSHSession, parse_target
from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import Client, SSHServer

pytestmark = pytest.mark.timeout(120)

SLEEPER = """\
[watcher:sleeper]
cmd = sleep 600
numprocesses = 2
"""
BIG_VALUE_BYTES = 3 * 1024 * 1024


def test_status_through_ssh_on_an_ipc_endpoint_matches_the_direct_reply(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    direct = client.run("--endpoint", daemon.endpoint, "status")

    tunnelled = client.ssh("--endpoint", daemon.endpoint, "status")

    assert (tunnelled.returncode, tunnelled.stderr) == (0, "")
    assert tunnelled.stdout == direct.stdout
    assert "sleeper  active  2" in tunnelled.stdout


def test_status_through_ssh_on_a_tcp_endpoint(
    client: Client,
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
) -> None:
    control, pubsub = free_tcp_port(), free_tcp_port()
    start_daemon(
        f"[circus]\nendpoint = tcp://127.0.0.1:{control}\n"
        f"pubsub_endpoint = tcp://127.0.0.1:{pubsub}\n\n{SLEEPER}"
    )

    result = client.ssh("--endpoint", f"tcp://127.0.0.1:{control}", "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")


def test_a_changing_command_goes_through_and_takes_effect(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)

    result = client.ssh("--endpoint", daemon.endpoint, "incr", "sleeper", "--waiting")

    assert (result.returncode, result.stdout) == (0, "3\n"), result.stderr
    assert len(daemon.pids("sleeper")) == 3


def test_listen_through_ssh_prints_the_daemons_events(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    listener = client.popen(
        "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", daemon.endpoint, "listen", "--count", "1", "watcher.sleeper.",
    )  # fmt: skip
    assert listener.stderr is not None
    assert "listening on" in listener.stderr.readline()  # subscribed by now

    # A subscriber misses what is published before its subscription has
    # reached the daemon, so keep making events until it has seen one.
    deadline = time.monotonic() + 30
    while listener.poll() is None and time.monotonic() < deadline:
        daemon.ok("decr", name="sleeper", waiting=True)
        daemon.ok("incr", name="sleeper", waiting=True)
    out, _ = listener.communicate(timeout=10)

    assert listener.returncode == 0
    assert " watcher.sleeper." in out


def test_an_absent_socket_is_reported_by_path(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    missing = f"ipc://{daemon.directory}/missing.sock"

    result = client.ssh("--endpoint", missing, "status")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"could not connect to {daemon.directory}/missing.sock as root" in (
        result.stderr
    )


def test_a_relative_ipc_endpoint_is_a_usage_error_over_ssh(client: Client) -> None:
    result = client.ssh("--endpoint", "ipc://run/ctl.sock", "status")

    assert result.returncode == 2
    assert "must be absolute" in result.stderr


# -- B28 ---------------------------------------------------------------------


def big_watcher(directory: Path) -> str:
    value = "".join(f"{i:07d}" for i in range(BIG_VALUE_BYTES // 7))
    return (
        f"{SLEEPER}\n[watcher:big]\ncmd = sleep 600\nautostart = false\n\n"
        f"[env:big]\nBIG = {value}\nDIR = {directory}\n"
    )


def test_several_mb_replies_are_byte_identical_20_times(
    client: Client, start_daemon: Callable[..., Daemon], workdir: Path
) -> None:
    daemon = start_daemon(big_watcher(workdir))
    args = ("--endpoint", daemon.endpoint, "get", "big", "env")
    direct = client.run(*args)
    assert direct.returncode == 0, direct.stderr
    assert len(direct.stdout) > BIG_VALUE_BYTES

    for attempt in range(20):
        tunnelled = client.ssh(*args)
        assert (attempt, tunnelled.returncode, tunnelled.stderr) == (attempt, 0, "")
        assert tunnelled.stdout == direct.stdout, f"attempt {attempt} differs"


STUBBORN = """\
[watcher:stubborn]
cmd = sh -c 'trap "" TERM; while :; do sleep 1; done'
graceful_timeout = 60
"""


def test_a_client_killed_mid_request_leaves_nothing_behind(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(STUBBORN)
    stubborn = daemon.pids("stubborn")
    before = {process.pid for process in sshd.connections()}
    stopping = client.popen(
        "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", daemon.endpoint, "--timeout", "90",
        "stop", "stubborn", "--waiting",
    )  # fmt: skip
    # The request is in the daemon's hands: it waits up to 60 s to reply.
    wait_for(
        lambda: daemon.call("status", name="stubborn").get("status") == "stopping",
        what="the tunnelled stop to reach the daemon",
    )
    session = {p.pid for p in sshd.connections()} - before
    assert session, "no sshd session for the client"
    assert psutil.Process(stopping.pid).children() == []  # no helper process

    stopping.send_signal(signal.SIGKILL)
    stopping.communicate(timeout=10)

    wait_for(
        lambda: not (session & {p.pid for p in sshd.connections()}),
        timeout=5,
        what="the sshd session of the killed client to end",
    )
    assert f"circusctl-{stopping.pid}-" not in Path("/proc/net/unix").read_text()
    for pid in stubborn:  # let the daemon finish the stop it was asked for
        os.kill(pid, signal.SIGKILL)


def test_ctrl_c_ends_a_tunnelled_listen_and_its_ssh_session(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    before = {process.pid for process in sshd.connections()}
    listener = client.popen(
        "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", daemon.endpoint, "listen",
    )  # fmt: skip
    assert listener.stderr is not None
    assert "listening on" in listener.stderr.readline()

    listener.send_signal(signal.SIGINT)
    listener.communicate(timeout=10)

    assert listener.returncode == 0
    wait_for(
        lambda: not ({p.pid for p in sshd.connections()} - before),
        timeout=5,
        what="the sshd session to end",
    )


def test_a_closed_session_leaves_no_thread(
    client: Client,
    start_daemon: Callable[..., Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = start_daemon(SLEEPER)
    monkeypatch.setenv("HOME", str(client.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    threads_before = set(threading.enumerate())
    options = SSHOptions(timeout=10, keys=KeyRing(str(client.key)))

    with SSHSession(parse_target(client.target()), options) as session:
        with CircusClient(daemon.endpoint, 10, connect=session.connect_socket) as ctl:
            assert ctl.call("status")["statuses"] == {"sleeper": "active"}
        events = subscribe(daemon.pubsub, connect=session.connect_socket)
        events.close()

    left = set(threading.enumerate()) - threads_before
    assert [thread.name for thread in left if thread.is_alive()] == []


def test_a_tunnelled_status_costs_little_beyond_the_ssh_login(
    client: Client,
    start_daemon: Callable[..., Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """status (status + list) on a fresh client, direct and through a session
    that has just logged in. The tunnel adds the channel, the bridge and a
    few round trips through paramiko (about 4 ms here); a 40 ms delayed-ACK
    stall after login (see transport.QuickAckSocket) would show at once."""
    daemon = start_daemon(SLEEPER)
    monkeypatch.setenv("HOME", str(client.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    options = SSHOptions(timeout=10, keys=KeyRing(str(client.key)))

    def status(connect: Connector) -> float:
        started = time.perf_counter()
        with CircusClient(daemon.endpoint, 10, connect=connect) as ctl:
            ctl.call("status")
            ctl.call("list", name="sleeper")
        return time.perf_counter() - started

    direct, tunnelled, logins = [], [], []
    for _ in range(7):
        direct.append(status(connect_socket))
        with SSHSession(parse_target(client.target()), options) as session:
            started = time.perf_counter()
            session.open()
            logins.append(time.perf_counter() - started)
            tunnelled.append(status(session.connect_socket))
    added = statistics.median(tunnelled) - statistics.median(direct)
    print(
        f"\nstatus direct {statistics.median(direct) * 1000:.2f} ms, ssh login "
        f"{statistics.median(logins) * 1000:.1f} ms, then tunnelled "
        f"{statistics.median(tunnelled) * 1000:.2f} ms (+{added * 1000:.2f} ms)"
    )

    assert added < 0.025
