"""TcpPeers fed by the monitor of a real ZeroMQ socket (the way circusd runs
it): real connections of a real user, ZAP requests answered by the test."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import zmq

from circusd.control.auth import ZAP_ENDPOINT, Caller, TcpPeers
from tests.conftest import ServiceUser
from tests.security.conftest import SYSTEM_PYTHON

pytestmark = pytest.mark.root

# A ZMTP 3.0 greeting for the NULL mechanism: libzmq asks ZAP once it is in.
GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32)


class Server:
    """A ROUTER bound on tcp with a ZAP domain; the test answers its ZAP
    requests with ``TcpPeers.identify``, as circusd's handler does."""

    def __init__(self, tickets: bool = False) -> None:
        self.context = zmq.Context()
        self.zap = self.context.socket(zmq.REP)
        self.zap.bind(ZAP_ENDPOINT)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.zap_domain = b"test"
        self.router.ipv6 = True
        self.peers = TcpPeers(tickets)
        self.peers.watch(self.router)
        self.ports: list[int] = []

    def bind(self, host: str) -> int:
        self.router.bind(f"tcp://{host}:0")
        port = int(self.router.last_endpoint.decode().rsplit(":", 1)[1])
        packed = socket.inet_pton(
            socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]")
        )
        self.peers.listen(packed, port)
        return port

    def answer_next(self) -> Caller:
        assert self.zap.poll(5000), "no ZAP request came"
        request = self.zap.recv_multipart()
        caller = self.peers.identify(request[3].decode(), insecure=False)
        self.zap.send_multipart([b"1.0", request[1], b"200", b"OK", b"", b""])
        if not self.zap.poll(0):
            self.peers.settled()
        return caller

    def close(self) -> None:
        self.peers.close()
        self.context.destroy(linger=0)


@pytest.fixture
def run_as(test_user: ServiceUser) -> Iterator[object]:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to connect as another user")
    started: list[subprocess.Popen[str]] = []

    def start(script: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            ["runuser", "-u", test_user.name, "--", SYSTEM_PYTHON, "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        process.communicate(timeout=10)


def line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def test_every_family_is_identified_from_the_accepted_connection(
    run_as, test_user: ServiceUser
):
    server = Server()
    try:
        ports = [server.bind("127.0.0.1"), server.bind("[::1]"), server.bind("[::]")]
        addresses = [
            ("127.0.0.1", ports[0]),
            ("::1", ports[1]),
            ("::ffff:127.0.0.1", ports[2]),  # an IPv6 socket, IPv4 underneath
        ]
        script = (
            "import socket, sys\n"
            f"held = [socket.create_connection(a) for a in {addresses!r}]\n"
            f"for s in held: s.sendall({GREETING!r})\n"
            "print('greeted', flush=True)\n"
            "sys.stdin.read()\n"
        )
        client = run_as(script)
        assert line(client) == "greeted"
        callers = [server.answer_next() for _ in ports]
    finally:
        server.close()
    assert [c.uid for c in callers] == [test_user.uid] * 3, callers


MALLORY = """
import socket, struct, sys
gone = socket.create_connection(('127.0.0.1', {port}))
gone.sendall({greeting!r})
print('greeted', flush=True)
sys.stdin.readline()
if {reset}:
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
gone.close()
held = socket.create_connection(('127.0.0.1', {port}))
held.sendall({greeting!r})
print('greeted', flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(
    "seen", [True, False], ids=["seen-before-it-went", "reset-before-it-was-seen"]
)
def test_a_connection_gone_before_it_was_asked_about_makes_nobody_root(
    run_as, test_user: ServiceUser, seen: bool
):
    """Mallory greets, and closes once libzmq has asked about it; then greets
    on a second connection. The request about the first is answered when it
    is gone and the second is waiting. Root connects before the second is
    asked about: it must not come out as root. Either circusd read the first
    connection's owner before it went, or the connection was reset (and its
    descriptor closed by libzmq) before circusd read the report of it."""
    server = Server()
    try:
        port = server.bind("127.0.0.1")
        script = MALLORY.format(port=port, greeting=GREETING, reset=not seen)
        mallory = run_as(script)
        assert line(mallory) == "greeted"
        assert server.zap.poll(5000), "no ZAP request for the first connection"
        if seen:
            server.peers.update()  # circusd reads the monitor's reports as they come
        assert mallory.stdin is not None
        mallory.stdin.write("\n")
        mallory.stdin.flush()
        assert line(mallory) == "greeted"
        time.sleep(0.2)
        first = server.answer_next()  # about the closed connection
        with socket.create_connection(("127.0.0.1", port)) as root:
            root.sendall(GREETING)
            time.sleep(0.2)
            second = server.answer_next()  # about mallory's second connection
            third = server.answer_next()  # about root's
    finally:
        server.close()
    assert first.uid in (None, test_user.uid), first
    assert second.uid in (None, test_user.uid), second
    assert third.uid in (None, 0), third


HOLDER = """
import socket, sys
idle = socket.create_connection(('127.0.0.1', {port}))
half = socket.create_connection(('127.0.0.1', {port}))
half.sendall({greeting!r}[:10])
print('holding', flush=True)
sys.stdin.read()
"""


def test_connections_that_sent_no_greeting_yet_hide_nobody(
    run_as, test_user: ServiceUser
):
    """Another user holds one connection idle and one half-greeted; only a
    connection that sent its whole greeting can be the one asked about."""
    server = Server()
    try:
        port = server.bind("127.0.0.1")
        holder = run_as(HOLDER.format(port=port, greeting=GREETING))
        assert line(holder) == "holding"
        with socket.create_connection(("127.0.0.1", port)) as root:
            root.sendall(GREETING)
            caller = server.answer_next()
    finally:
        server.close()
    assert caller.uid == 0, caller


def test_connections_closed_without_greeting_hide_nobody_once_no_request_waits():
    """Connect and close (a reachability check): those libzmq dropped before
    circusd could look count as unknown users until no request is waiting,
    then are let go, as circusd's follower of the reports does."""
    server = Server()
    try:
        port = server.bind("127.0.0.1")
        for _ in range(20):
            socket.create_connection(("127.0.0.1", port)).close()
        time.sleep(0.2)  # libzmq has seen them go
        server.peers.update()
        assert not server.zap.poll(0)
        server.peers.settled()
        with socket.create_connection(("127.0.0.1", port)) as root:
            root.sendall(GREETING)
            caller = server.answer_next()
    finally:
        server.close()
    assert caller.uid == 0, caller


class TicketServer(Server):
    """Answers ZAP with tickets and redeems them with each message's
    descriptor, as circusd's control socket does."""

    def answer_ticket(self) -> None:
        assert self.zap.poll(5000), "no ZAP request came"
        request = self.zap.recv_multipart()
        ticket = self.peers.ticket(request[3].decode())
        user_id = str(ticket).encode()
        self.zap.send_multipart([b"1.0", request[1], b"200", b"OK", user_id, b""])

    def next_message(self) -> tuple[bytes, Caller]:
        assert self.router.poll(5000), "no message came"
        frames = self.router.recv_multipart(copy=False)
        ticket = int(frames[-1].get("User-Id"))
        caller = self.peers.redeem(ticket, frames[-1].get(zmq.SRCFD), insecure=False)
        return frames[-1].bytes, caller


DEALER = """
import sys, zmq
dealer = zmq.Context().socket(zmq.DEALER)
dealer.connect('tcp://127.0.0.1:{port}')
dealer.send(b'{name}')
print('sent', flush=True)
sys.stdin.read()
"""


def test_users_connecting_at_the_same_moment_are_each_known(
    run_as, test_user: ServiceUser
):
    """A ticket is redeemed by the connection's own first message: two users
    whose connections are asked about at once are still told apart."""
    server = TicketServer(tickets=True)
    root = server.context.socket(zmq.DEALER)
    try:
        port = server.bind("127.0.0.1")
        other = run_as(DEALER.format(port=port, name="other"))
        root.connect(f"tcp://127.0.0.1:{port}")
        root.send(b"root")
        assert line(other) == "sent"
        time.sleep(0.2)  # both asked about before either is answered
        server.answer_ticket()
        server.answer_ticket()
        received = dict(server.next_message() for _ in range(2))
    finally:
        root.close(linger=0)
        server.close()
    assert received[b"root"].uid == 0, received
    assert received[b"other"].uid == test_user.uid, received


def test_a_message_read_after_its_descriptor_was_reused_is_not_anyones(
    run_as, test_user: ServiceUser
):
    """The other user sends and goes; root connects and may get the same
    descriptor before the message is read: the message is not root's."""
    server = TicketServer(tickets=True)
    root = server.context.socket(zmq.DEALER)
    try:
        port = server.bind("127.0.0.1")
        other = run_as(DEALER.format(port=port, name="other"))
        server.answer_ticket()
        assert line(other) == "sent"
        other.communicate(timeout=10)  # gone
        time.sleep(0.2)
        root.connect(f"tcp://127.0.0.1:{port}")
        root.send(b"root")
        server.answer_ticket()
        received = [server.next_message() for _ in range(2)]
    finally:
        root.close(linger=0)
        server.close()
    callers = dict(received)
    assert callers[b"other"].uid is None, received
    assert callers[b"root"].uid == 0, received
