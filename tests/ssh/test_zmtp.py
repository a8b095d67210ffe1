"""Requests over SSH speak ZMTP on the channel itself (circusd.client.ssh.zmtp):
against real daemons and against hand-written ZMTP peers behind the real
sshd, it behaves as the bridge did for the caller, without its threads and
local sockets, and never sends a request before the daemon's READY."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import zmq

from circusd.client import CallError, CallTimeout, CircusClient
from circusd.client.ssh import KeyRing, SSHOptions, SSHSession, parse_target
from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import Client, LoginUser, SSHServer
from tests.ssh.test_tunnel import BIG_VALUE_BYTES, SLEEPER, big_watcher

pytestmark = pytest.mark.timeout(120)

# What a ROUTER says, written out from 23/ZMTP: its greeting (signature,
# version 3.0, NULL, as-server), then READY with its Socket-Type.
ROUTER_GREETING = (
    b"\xff\0\0\0\0\0\0\0\0\x7f"
    + b"\x03\x00"
    + b"NULL"
    + bytes(16)
    + b"\x01"
    + bytes(31)
)
READY_BODY = b"\x05READY\x0bSocket-Type\0\0\0\x06ROUTER"
ROUTER_READY = b"\x04" + bytes([len(READY_BODY)]) + READY_BODY
CLIENT_GREETING_SIZE = 64


# -- a ZMTP peer written by hand, on a unix socket the sshd connects to ---------


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {size} octets")
        data += chunk
    return data


def read_frame(connection: socket.socket) -> tuple[int, bytes]:
    flags = read_exactly(connection, 1)[0]
    if flags & 0x02:
        size = int.from_bytes(read_exactly(connection, 8), "big")
    else:
        size = read_exactly(connection, 1)[0]
    return flags, read_exactly(connection, size)


class Peer:
    """Serves one connection at ``path`` with ``script`` in a thread; what the
    script records goes into ``seen``."""

    def __init__(
        self, path: Path, script: Callable[[socket.socket, list[bytes]], None]
    ) -> None:
        self.path = path
        self.seen: list[bytes] = []
        self.error: BaseException | None = None
        self.connected = threading.Event()
        self.got_request = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._listener.settimeout(30)
        self._script = script
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.path}"

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
            self.connected.set()
            with connection:
                connection.settimeout(30)
                self._script(connection, self.seen)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def request(self, connection: socket.socket) -> bytes:
        """Read the client's greeting and READY, then its request frame."""
        read_exactly(connection, CLIENT_GREETING_SIZE)
        flags, _ = read_frame(connection)
        assert flags == 0x04, "the client's READY"
        flags, body = read_frame(connection)
        assert flags == 0x00, f"a request of one frame, got flags {flags:#x}"
        self.got_request.set()
        return body

    def stop(self) -> None:
        self._listener.close()
        self._thread.join(30)


@pytest.fixture
def peers(workdir: Path) -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def start(script: Callable[[socket.socket, list[bytes]], None]) -> Peer:
        peer = Peer(workdir / f"peer{len(started)}.sock", script)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def session_as(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., SSHSession]]:
    """``session_as(user, key)``: an SSHSession with the client's known_hosts."""
    monkeypatch.setenv("HOME", str(client.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sessions: list[SSHSession] = []

    def start(user: str = "root", key: Path | None = None) -> SSHSession:
        keys = KeyRing(str(key or client.key))
        options = SSHOptions(timeout=10, keys=keys)
        sessions.append(SSHSession(parse_target(client.target(user)), options))
        return sessions[-1]

    yield start
    for session in sessions:
        session.close()


def live_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.is_alive()}


# -- against real daemons -----------------------------------------------------


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_requests_need_no_local_zeromq_socket_and_no_copying_thread(
    session_as: Callable[..., SSHSession],
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
    transport: str,
) -> None:
    endpoint = (
        "ipc://{dir}/ctl.sock"
        if transport == "ipc"
        else f"tcp://127.0.0.1:{free_tcp_port()}"
    )
    daemon = start_daemon(f"[circus]\nendpoint = {endpoint}\n\n{SLEEPER}")
    endpoint = endpoint.replace("{dir}", str(daemon.directory))
    before = live_threads()

    session = session_as()
    with CircusClient(endpoint, 10, connect=session.connect_socket) as ctl:
        statuses = ctl.call("status")["statuses"]
        watchers = ctl.call("list")["watchers"]
        during = live_threads() - before
        unix = Path("/proc/net/unix").read_text()
    session.close()

    assert (statuses, watchers) == ({"sleeper": "active"}, ["sleeper"])
    assert [t for t in during if not isinstance(t, paramiko.Transport)] == []
    assert f"@circusctl-{os.getpid()}-" not in unix  # no bridge was ever made
    wait_for(lambda: live_threads() <= before, timeout=5, what="paramiko to end")


def test_several_mb_replies_from_a_tcp_endpoint_are_byte_identical_20_times(
    client: Client,
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
    workdir: Path,
) -> None:
    control = free_tcp_port()
    daemon = start_daemon(
        f"[circus]\nendpoint = tcp://127.0.0.1:{control}\n\n{big_watcher(workdir)}"
    )
    args = ("--endpoint", f"tcp://127.0.0.1:{control}", "get", "big", "env")
    direct = client.run(*args)
    assert direct.returncode == 0, direct.stderr
    assert len(direct.stdout) > BIG_VALUE_BYTES

    for attempt in range(20):
        tunnelled = client.ssh(*args)
        assert (attempt, tunnelled.returncode, tunnelled.stderr) == (attempt, 0, "")
        assert tunnelled.stdout == direct.stdout, f"attempt {attempt} differs"
    assert daemon.process.poll() is None


def test_several_mb_replies_on_one_connection_arrive_whole(
    session_as: Callable[..., SSHSession],
    start_daemon: Callable[..., Daemon],
    workdir: Path,
) -> None:
    daemon = start_daemon(big_watcher(workdir))
    with CircusClient(daemon.endpoint, 10) as direct_client:
        direct = direct_client.call("get", name="big", keys=["env"])["options"]

    with CircusClient(
        daemon.endpoint, 10, connect=session_as().connect_socket
    ) as tunnelled_client:
        for _ in range(5):
            reply = tunnelled_client.call("get", name="big", keys=["env"])
            assert reply["options"] == direct
    assert len(direct["env"]["BIG"]) >= BIG_VALUE_BYTES - 7


def test_the_daemon_judges_the_ssh_login_user_on_a_tcp_endpoint(
    client: Client,
    login_user: LoginUser,
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
) -> None:
    """A member of readonly_group may read and is refused anything else, by
    the uid the daemon finds for the tcp connection that sshd made."""
    control = free_tcp_port()
    daemon = start_daemon(
        f"[circus]\nendpoint = tcp://127.0.0.1:{control}\n"
        f"readonly_group = {login_user.name}\n\n{SLEEPER}"
    )
    user, key = login_user.name, login_user.key
    endpoint = ("--endpoint", f"tcp://127.0.0.1:{control}")

    read = client.ssh(*endpoint, "list", user=user, key=key)
    change = client.ssh(*endpoint, "stop", "sleeper", user=user, key=key)

    assert (read.returncode, read.stdout, read.stderr) == (0, "sleeper\n", "")
    assert change.returncode == 3
    assert change.stderr.count("\n") == 1 and "permission denied" in change.stderr
    refusals = [
        line for line in daemon.output().splitlines() if "refused command=stop" in line
    ]
    assert len(refusals) == 1 and f"uid={login_user.uid} " in refusals[0]


@pytest.fixture
def refusing_router(workdir: Path) -> Iterator[str]:
    """A libzmq ROUTER whose ZAP handler refuses every connection; its endpoint."""
    context: zmq.Context[Any] = zmq.Context()
    zap = context.socket(zmq.REP)
    zap.bind("inproc://zeromq.zap.01")
    router = context.socket(zmq.ROUTER)
    router.zap_domain = b"test"
    endpoint = f"ipc://{workdir}/refusing.sock"
    router.bind(endpoint)
    stop = threading.Event()

    def refuse() -> None:
        while not stop.is_set():
            if zap.poll(50):
                version, request_id, *_ = zap.recv_multipart()
                zap.send_multipart([version, request_id, b"400", b"no", b"", b""])

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    yield endpoint
    stop.set()
    thread.join(5)
    router.close(linger=0)
    zap.close(linger=0)
    context.term()


def test_a_connection_the_daemon_refuses_fails_at_once_with_its_reason(
    session_as: Callable[..., SSHSession], refusing_router: str
) -> None:
    """libzmq answers a refusal of its ZAP handler with an ERROR command."""
    session = session_as()

    started = time.monotonic()
    with CircusClient(refusing_router, 10, connect=session.connect_socket) as ctl:
        with pytest.raises(CallError) as caught:
            ctl.call("status")

    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot send to {refusing_router}: {session.label}: the daemon refused "
        "the connection: 400"
    )


def test_a_socket_that_takes_no_dealer_ends_the_handshake_at_once(
    session_as: Callable[..., SSHSession], start_daemon: Callable[..., Daemon]
) -> None:
    """The event stream (a PUB socket) hangs up on a DEALER's READY."""
    daemon = start_daemon(SLEEPER)
    session = session_as()

    started = time.monotonic()
    with CircusClient(daemon.pubsub, 10, connect=session.connect_socket) as ctl:
        with pytest.raises(CallError) as caught:
            ctl.call("status")

    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot send to {daemon.pubsub}: {session.label}: the daemon closed the "
        "connection during the ZeroMQ handshake"
    )


# -- against hand-written peers -----------------------------------------------


def test_no_request_leaves_before_the_daemons_ready(
    session_as: Callable[..., SSHSession], peers: Callable[..., Peer]
) -> None:
    """A daemon that waits for its ZAP handler drops a connection whose data
    frame comes before its READY: here READY waits 0.3 s."""

    def slow_ready(connection: socket.socket, seen: list[bytes]) -> None:
        connection.sendall(ROUTER_GREETING)
        connection.settimeout(0.3)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        seen.append(received)
        connection.settimeout(30)
        connection.sendall(ROUTER_READY)
        flags, body = read_frame(connection)
        seen.append(body)
        reply = b'{"id": "%s", "status": "ok"}' % body.split(b'"id": "')[1][:32]
        connection.sendall(bytes([0, len(reply)]) + reply)

    peer = peers(slow_ready)
    with CircusClient(peer.endpoint, 10, connect=session_as().connect_socket) as ctl:
        assert ctl.call("status") == {"id": ctl_id(peer), "status": "ok"}
    peer.stop()

    before_ready, request = peer.seen
    assert len(before_ready) > CLIENT_GREETING_SIZE
    assert before_ready[:CLIENT_GREETING_SIZE][10:12] == b"\x03\x00"
    command = before_ready[CLIENT_GREETING_SIZE:]
    assert command[0] == 0x04 and len(command) == 2 + command[1], "READY alone"
    assert (
        command[2:8] == b"\x05READY" and b"\x0bSocket-Type\0\0\0\x06DEALER" in command
    )
    assert b'"command": "status"' in request


def ctl_id(peer: Peer) -> str:
    request = peer.seen[-1]
    return request.split(b'"id": "')[1][:32].decode()


def test_a_daemon_closing_in_the_middle_of_a_reply_is_reported_at_once(
    client: Client, peers: Callable[..., Peer]
) -> None:
    def half_a_reply(connection: socket.socket, seen: list[bytes]) -> None:
        connection.sendall(ROUTER_GREETING + ROUTER_READY)
        seen.append(peer.request(connection))
        size = 4 * 1024 * 1024
        connection.sendall(b"\x02" + size.to_bytes(8, "big") + b"{" * (size // 3))

    peer = peers(half_a_reply)
    result = client.ssh("--endpoint", peer.endpoint, "--timeout", "20", "status")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr == (
        f"circusctl: error: cannot receive from {peer.endpoint}: ssh "
        f"{client.target()}: the daemon closed the connection in the middle of "
        "a reply\n"
    )
    assert result.elapsed < 10


def test_a_daemon_that_never_readies_times_out_like_any_other(
    session_as: Callable[..., SSHSession], peers: Callable[..., Peer]
) -> None:
    def greeting_only(connection: socket.socket, seen: list[bytes]) -> None:
        connection.sendall(ROUTER_GREETING)
        seen.append(connection.recv(65536))
        connection.recv(1)  # until the client closes

    peer = peers(greeting_only)
    before = live_threads()
    session = session_as()
    started = time.monotonic()
    with CircusClient(peer.endpoint, 1.0, connect=session.connect_socket) as ctl:
        with pytest.raises(CallTimeout) as caught:
            ctl.call("status")
    elapsed = time.monotonic() - started
    session.close()

    assert str(caught.value) == (
        f"cannot reach {peer.endpoint}: no answer within 1 s (connection not "
        "completed); the daemon is not running or not reachable"
    )
    assert 0.99 <= elapsed < 3  # CircusClient polls in whole milliseconds
    wait_for(lambda: live_threads() <= before, timeout=5, what="no thread left")


def test_a_reply_that_never_comes_times_out_and_leaves_no_thread(
    session_as: Callable[..., SSHSession], peers: Callable[..., Peer]
) -> None:
    def no_reply(connection: socket.socket, seen: list[bytes]) -> None:
        connection.sendall(ROUTER_GREETING + ROUTER_READY)
        seen.append(peer.request(connection))
        connection.recv(1)  # until the client closes

    peer = peers(no_reply)
    before = live_threads()
    session = session_as()
    with CircusClient(peer.endpoint, 1.0, connect=session.connect_socket) as ctl:
        with pytest.raises(CallTimeout, match=r"no reply within 1 s"):
            ctl.call("status")
    session.close()

    assert peer.got_request.is_set()
    wait_for(lambda: live_threads() <= before, timeout=5, what="no thread left")


def test_ctrl_c_while_waiting_for_a_reply_ends_the_ssh_session(
    client: Client, sshd: SSHServer, peers: Callable[..., Peer]
) -> None:
    def no_reply(connection: socket.socket, seen: list[bytes]) -> None:
        connection.sendall(ROUTER_GREETING + ROUTER_READY)
        seen.append(peer.request(connection))
        seen.append(connection.recv(1))  # b"": the client went

    peer = peers(no_reply)
    before = {process.pid for process in sshd.connections()}
    waiting = client.popen(
        "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", peer.endpoint, "--timeout", "60", "status",
    )  # fmt: skip
    assert peer.got_request.wait(30), "the request never came"

    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=10)

    assert waiting.returncode == 130, stderr
    wait_for(
        lambda: not ({p.pid for p in sshd.connections()} - before),
        timeout=5,
        what="the sshd session to end",
    )
    peer.stop()
    assert peer.seen[-1] == b""


def test_a_cast_reaches_the_daemon_when_the_session_closes_right_after(
    session_as: Callable[..., SSHSession], start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    session = session_as()

    with CircusClient(daemon.endpoint, 10, connect=session.connect_socket) as ctl:
        ctl.cast("incr", name="sleeper")
    session.close()

    wait_for(lambda: len(daemon.pids("sleeper")) == 3, what="the cast's incr")
