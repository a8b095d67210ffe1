"""A ZeroMQ DEALER spoken directly on an SSH channel: ZMTP 3.0, NULL mechanism.

Requests and replies (CircusClient) need no local ZeroMQ socket and no
bridge: this module writes and reads the ZMTP 3.0 wire format (23/ZMTP)
itself, on the paramiko channel, in the caller's thread. That saves round
trips through the tunnel: libzmq's own handshake crosses it in several
steps (signature, version, rest of the greeting, READY), this one in one
round trip. As soon as the channel is open, the whole greeting and the
READY command go out in one write; the first request leaves once the
daemon's READY has come.

It must not leave earlier: a daemon with a ZAP handler (circusd always has
one) reads a data frame that comes while it waits for the ZAP answer as an
unexpected handshake command, and drops the connection.

``ChannelDealer`` has the part of a zmq.Socket's interface that CircusClient
uses (poll, send, recv_multipart, close), with the same meaning as a DEALER
with ZMQ_IMMEDIATE: POLLOUT once the handshake is done. It starts no thread;
``close`` (or the session's) closes the channel. A connection that the
daemon refuses or closes raises a zmq.ZMQError with a one-line reason at
once, where a libzmq socket would wait for the timeout.
"""

from __future__ import annotations

import errno
import time
import uuid
from collections import deque
from typing import Any, NoReturn, cast

import paramiko
import zmq

ENABLED = True  # False: DEALER sockets use the bridge too (to compare the two)

# The greeting (64 octets): signature, version 3.0, mechanism, as-server, filler.
SIGNATURE = b"\xff" + bytes(8) + b"\x7f"
GREETING = SIGNATURE + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\x00" + bytes(31)
GREETING_SIZE = len(GREETING)
VERSION_END = 11  # the signature and the major version
MECHANISM = slice(12, 32)

# Frame flags.
MORE = 0x01
LONG = 0x02
COMMAND = 0x04
RESERVED = 0xF8

PEERS = (b"ROUTER", b"DEALER", b"REP")  # the socket types a DEALER may talk to
CHUNK = 256 * 1024


class ProtocolError(Exception):
    """The peer broke ZMTP, or refused the connection; a one-line reason."""


def encode_frame(body: bytes, flags: int = 0) -> bytes:
    """One frame: flags, size (one octet, or eight with LONG), body."""
    if len(body) > 255:
        return bytes([flags | LONG]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def encode_command(name: bytes, data: bytes) -> bytes:
    return encode_frame(bytes([len(name)]) + name + data, COMMAND)


def encode_ready(properties: dict[bytes, bytes]) -> bytes:
    """READY with its metadata: name (short string), value (long string)."""
    metadata = b"".join(
        bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value
        for name, value in properties.items()
    )
    return encode_command(b"READY", metadata)


def parse_metadata(data: bytes) -> dict[bytes, bytes]:
    properties: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        size = data[position]
        name = data[position + 1 : position + 1 + size]
        position += 1 + size
        length = int.from_bytes(data[position : position + 4], "big")
        value = data[position + 4 : position + 4 + length]
        if len(name) != size or len(value) != length:
            raise ProtocolError("malformed READY metadata")
        properties[name.lower()] = value
        position += 4 + length
    return properties


class Reader:
    """Parses what the peer sends: its greeting, then frames.

    ``feed`` bytes as they come; ``frames`` yields each complete frame as
    (flags, body) and keeps an incomplete one for the next feed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.greeted = False

    @property
    def pending(self) -> bool:
        """Part of a greeting or frame is waiting for the rest."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self.greeted:
            self._check_greeting()

    def frames(self) -> list[tuple[int, bytes]]:
        found = []
        buffer, position = self._buffer, 0
        while self.greeted and len(buffer) - position >= 2:
            flags = buffer[position]
            if flags & RESERVED:
                raise ProtocolError(f"invalid frame flags 0x{flags:02x}")
            header = 9 if flags & LONG else 2
            if len(buffer) - position < header:
                break
            if flags & LONG:
                size = int.from_bytes(buffer[position + 1 : position + 9], "big")
            else:
                size = buffer[position + 1]
            end = position + header + size
            if len(buffer) < end:
                break
            found.append((flags, bytes(buffer[position + header : end])))
            position = end
        del buffer[:position]
        return found

    def _check_greeting(self) -> None:
        head = self._buffer[:GREETING_SIZE]
        if head[:1] not in (b"", b"\xff") or (len(head) >= 10 and not head[9] & 1):
            raise ProtocolError("the peer does not speak ZMTP (not a ZeroMQ socket)")
        if len(head) >= VERSION_END and head[10] < 3:
            raise ProtocolError(
                f"the peer speaks ZMTP {head[10]}.x, not 3 (libzmq older than 4)"
            )
        if len(head) < GREETING_SIZE:
            return
        mechanism = bytes(head[MECHANISM]).rstrip(b"\0")
        if mechanism != b"NULL":
            name = mechanism.decode("ascii", "replace")
            raise ProtocolError(
                f"the endpoint asks for the {name} security mechanism; only NULL "
                "is spoken over SSH"
            )
        del self._buffer[:GREETING_SIZE]
        self.greeted = True


class ChannelDealer:
    """A DEALER on ``channel`` (open, to the daemon's socket): see the module.

    ``label`` names the connection in errors; ``send_timeout`` bounds a send
    that waits for the SSH window (a request is smaller than the window, so
    in practice it never waits).
    """

    def __init__(
        self, channel: paramiko.Channel, label: str, send_timeout: float
    ) -> None:
        self.label = label
        self._channel = channel
        self._send_timeout = send_timeout
        self._reader = Reader()
        self._ready = False  # the peer's READY has come
        self._frames: list[bytes] = []  # of a message not yet complete
        self._messages: deque[list[bytes]] = deque()
        self._error: zmq.ZMQError | None = None
        identity = uuid.uuid4().hex.encode()
        hello = encode_ready({b"Socket-Type": b"DEALER", b"Identity": identity})
        try:
            self._write(GREETING + hello)
        except zmq.ZMQError:
            pass  # kept: the first poll raises it, as the caller expects

    @property
    def closed(self) -> bool:
        return bool(self._channel.closed)

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        """``flags`` if ready within ``timeout`` ms (None or < 0: no limit), else 0.

        POLLIN: a whole message is waiting; POLLOUT: the handshake is done.
        """
        deadline = None if timeout is None or timeout < 0 else timeout / 1000
        if deadline is not None:
            deadline += time.monotonic()
        while not self._ready_for(flags):
            if not self._read(deadline):
                return 0
        return flags

    def send(self, data: bytes, flags: int = 0) -> None:
        """Send a one-frame message; zmq.Again if the handshake is not done."""
        self._check()
        if not self._ready:
            raise zmq.Again()
        self._write(encode_frame(bytes(data)))

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        """The next message; with NOBLOCK, zmq.Again if none is waiting."""
        if not self._messages:
            if flags & zmq.NOBLOCK:
                self._check()
                raise zmq.Again()
            self.poll(None, zmq.POLLIN)
        return self._messages.popleft()

    def close(self, linger: int | None = None) -> None:
        """Close the channel; what was sent is already on its way."""
        self._channel.close()

    # -- inside -----------------------------------------------------------

    def _ready_for(self, flags: int) -> bool:
        if flags & zmq.POLLIN and self._messages:
            return True
        self._check()
        return bool(flags & zmq.POLLOUT and self._ready)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _read(self, deadline: float | None) -> bool:
        """Take in what the peer sent before ``deadline``; False on timeout."""
        if deadline is None:
            self._channel.settimeout(None)
        else:
            self._channel.settimeout(max(deadline - time.monotonic(), 0.0))
        try:
            data = self._channel.recv(CHUNK)
        except TimeoutError:
            return False
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(errno.ECONNRESET, f"reading failed: {exc}")
        if not data:
            self._fail(errno.ECONNRESET, self._ended())
        try:
            self._reader.feed(data)
            for frame_flags, body in self._reader.frames():
                self._take(frame_flags, body)
        except ProtocolError as exc:
            self._fail(errno.EPROTO, str(exc))
        return True

    def _take(self, flags: int, body: bytes) -> None:
        if flags & COMMAND:
            self._command(body)
            return
        if not self._ready:
            raise ProtocolError("the peer sent a message before its READY")
        self._frames.append(body)
        if not flags & MORE:
            self._messages.append(self._frames)
            self._frames = []

    def _command(self, body: bytes) -> None:
        size = body[0] if body else 0
        name, data = bytes(body[1 : 1 + size]), body[1 + size :]
        if name == b"READY" and not self._ready:
            kind = parse_metadata(data).get(b"socket-type", b"")
            if kind not in PEERS:
                shown = kind.decode("ascii", "replace") or "unnamed"
                raise ProtocolError(f"the endpoint is a {shown} socket, not a ROUTER")
            self._ready = True
        elif name == b"ERROR":
            reason = data[1 : 1 + data[0]] if data else b""
            text = reason.decode("utf-8", "replace") or "no reason given"
            raise ProtocolError(f"the daemon refused the connection: {text}")
        elif name == b"PING":  # 37/ZMTP (3.1): answer with its context
            self._write(encode_command(b"PONG", data[2:]))
        # Other commands carry nothing a DEALER needs.

    def _ended(self) -> str:
        transport = self._channel.get_transport()
        if transport is not None and not transport.is_active():
            cause = transport.get_exception()
            return "the SSH connection was lost" + (f": {cause}" if cause else "")
        if not self._ready:
            return "the daemon closed the connection during the ZeroMQ handshake"
        if self._frames or self._reader.pending:
            return "the daemon closed the connection in the middle of a reply"
        return "the daemon closed the connection"

    def _write(self, data: bytes) -> None:
        self._channel.settimeout(self._send_timeout)
        try:
            self._channel.sendall(data)
        except TimeoutError:
            self._fail(errno.ETIMEDOUT, "the SSH channel took no data in time")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(errno.ECONNRESET, f"sending failed: {exc}")

    def _fail(self, number: int, reason: str) -> NoReturn:
        """Remember why the connection is unusable, close it, and raise."""
        self._error = zmq.ZMQError(number, f"{self.label}: {reason}")
        self._channel.close()
        raise self._error


def dealer(
    channel: paramiko.Channel, label: str, send_timeout: float
) -> zmq.Socket[Any]:
    """A ChannelDealer for a Connector, which promises a zmq.Socket: its
    only user, CircusClient, calls nothing else than what it has."""
    return cast("zmq.Socket[Any]", ChannelDealer(channel, label, send_timeout))


def nothing() -> None:
    """Nothing to do while the channel opens (see TunnelTransport)."""
