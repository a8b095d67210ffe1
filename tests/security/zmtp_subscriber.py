"""A subscriber over ZMTP 3.0 (NULL), standard library only, to run as
another user (``runuser`` with the system's python3).

    zmtp_subscriber.py listen HOST PORT SECONDS [TOPIC]
        subscribe to TOPIC (``stat.``) and print ``received N`` (messages
        within SECONDS) or ``refused`` (the server closed the connection);
    zmtp_subscriber.py unsubscribe HOST PORT SECONDS TOPIC...
        send an unsubscription from each TOPIC (never subscribed to), print
        ``sent``, and hold the connection for SECONDS;
    zmtp_subscriber.py idle HOST PORT CONNECTIONS SECONDS
        open CONNECTIONS connections that send nothing and print ``closed N
        after T`` (how many the server closed within SECONDS, and when the
        last of them was closed);
    zmtp_subscriber.py flood HOST PORT CONNECTIONS TOPICS SIZE SECONDS MODE
        open CONNECTIONS connections and send TOPICS subscriptions of SIZE
        bytes on each (all different with MODE ``unique``, the same ones on
        every connection with ``same``), keeping none of them here, hold
        them for SECONDS, and print ``sent``.
"""

import random
import select
import socket
import struct
import sys
import time

# Copied beside this script: ZMTP framing, shared with the control client.
from zmtp_client import frame, read_exactly, read_frame


def connect(host: str, port: int) -> socket.socket:
    """tcp, or the abstract unix socket ``@NAME`` given as HOST."""
    if host.startswith("@"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect("\0" + host[1:])
    else:
        sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0")
                 + b"\0" + bytes(31))  # fmt: skip
    read_exactly(sock, 64)
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
    sock.sendall(frame(ready, command=True))
    return sock


def handshake(sock: socket.socket) -> None:
    """Wait for the server's READY, as a ZeroMQ client does before it sends
    its subscriptions (a message sent earlier breaks the handshake)."""
    flags, body = read_frame(sock)
    if not flags & 0x04 or not body.startswith(b"\x05READY"):
        raise ConnectionError(f"no READY from the server: {body[:40]!r}")


def listen(host: str, port: int, seconds: float, topic: bytes) -> str:
    """Like a ZeroMQ SUB socket, connect again while refused (a tcp peer
    cannot be identified while another user connects at the same moment)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock = connect(host, port)
        except OSError:
            time.sleep(random.uniform(0.1, 0.3))
            continue
        with sock:
            try:
                handshake(sock)
                sock.sendall(frame(b"\x01" + topic))
                return f"received {receive(sock, deadline, topic)}"
            except OSError:
                pass
        time.sleep(random.uniform(0.1, 0.3))
    return "refused"


def receive(sock: socket.socket, deadline: float, topic: bytes) -> int:
    received = 0
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            flags, body = read_frame(sock)
        except TimeoutError:
            break
        if not flags & 0x04 and body.startswith(topic):
            received += 1
    return received


def topic(number: int, size: int) -> bytes:
    return (b"stat.%08d." % number).ljust(size, b"x")


def flood(host: str, port: int, arguments: list[str]) -> str:
    connections, topics, size = (int(value) for value in arguments[:3])
    hold, unique = float(arguments[3]), arguments[4] == "unique"
    held = []
    for index in range(connections):
        first = index * topics if unique else 0
        batch = b"".join(frame(b"\x01" + topic(first + n, size)) for n in range(topics))
        try:
            sock = connect(host, port)
            handshake(sock)
            sock.sendall(batch)
        except OSError:
            continue  # refused or dropped by the server
        held.append(sock)
    time.sleep(hold)
    return "sent"


def idle(host: str, port: int, connections: int, seconds: float) -> str:
    started = time.monotonic()
    held = []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=10)
        sock.setblocking(False)
        held.append(sock)
    closed, last = 0, 0.0
    deadline = started + seconds
    while held and time.monotonic() < deadline:
        readable, _, _ = select.select(held, [], [], 0.1)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # a greeting from the server is not a close
                held.remove(sock)
                sock.close()
                closed, last = closed + 1, time.monotonic() - started
    return f"closed {closed} after {last:.1f}"


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "listen":
        topic = sys.argv[5].encode() if len(sys.argv) > 5 else b"stat."
        print(listen(host, port, float(sys.argv[4]), topic), flush=True)
    elif mode == "idle":
        print(idle(host, port, int(sys.argv[4]), float(sys.argv[5])), flush=True)
    elif mode == "unsubscribe":
        sock = connect(host, port)
        handshake(sock)
        sock.sendall(b"".join(frame(b"\x00" + t.encode()) for t in sys.argv[5:]))
        print("sent", flush=True)
        time.sleep(float(sys.argv[4]))
    else:
        print(flood(host, port, sys.argv[4:]), flush=True)


if __name__ == "__main__":
    main()
