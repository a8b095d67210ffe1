"""The connections a tcp socket of circusd accepted, from its ZeroMQ monitor.

libzmq reports each connection it accepts (ZMQ_EVENT_ACCEPTED, with the new
descriptor) before it reads a byte from it, and each one it drops
(ZMQ_EVENT_DISCONNECTED) before it closes the descriptor, both in order, on
one pipe. So when a ZAP request comes in, the connection it is about has been
reported: the events waiting then are read, each new descriptor is asked for
its addresses and the kernel for the owner of its client's end, one exact
lookup instead of a walk of every connection on the host.

A descriptor may be closed and reused before its report is read. Whoever
closed it reported that first, so a connection is believed to be what its
descriptor shows only when no later report names the same descriptor;
otherwise it counts as a connection of an unknown user from anywhere, and
so does one gone before its descriptor could be read: it may have sent its
greeting, and a ZAP request about it may be waiting (``TcpPeers`` keeps
counting it until none is). One seen to go without a greeting never counts.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from circusd.control.tcp_diag import (
    _BYTES_RECEIVED,
    GREETING,
    Address,
    _Entry,
    _plain,
)

REMOTE = -1  # the key's uid for a peer that is not on this host
UNKNOWN = -2  # the key's uid when its client's end was gone before it was seen
ANY = b"*"  # the key's address when not even the peer's address is known
EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED

Key = tuple[bytes, int]  # the peer's packed address, the uid of its client's end


@dataclass(frozen=True, eq=False)  # each connection is itself, whatever its key
class Connection:
    key: Key
    local: Address | None = None  # our end
    remote: Address | None = None  # the client's end


def unseen() -> Connection:
    """A connection whose client is not known."""
    return Connection((ANY, UNKNOWN))


_INET = (socket.AF_INET, socket.AF_INET6)


class _Tracked:
    """A live connection; ``held`` is a duplicate of its descriptor, kept
    until it is known to have sent its greeting, so that this is known even
    after libzmq has closed it (the connection ends when both are closed)."""

    def __init__(self, connection: Connection, held: socket.socket | None) -> None:
        self.connection = connection
        self.held = held
        self.greeted = held is None
        self.serial = 0  # its place in the order the connections were seen

    def check(self) -> bool:
        if self.held is not None and _received(self.held) >= GREETING:
            self.let_go()
        return self.greeted

    def let_go(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None
            self.greeted = True


def _received(sock: socket.socket) -> int:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return GREETING  # unknown: it may have sent it
    if len(info) < _BYTES_RECEIVED.stop:
        return GREETING
    return int.from_bytes(info[_BYTES_RECEIVED], sys.byteorder)


class Accepts:
    """The live connections of one socket; call ``update`` before using them."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        ours: Callable[[Address], bool],
        find: Callable[[Address, Address], _Entry | None],
        greetings: bool = True,
    ) -> None:
        """``greetings``: whether to tell which connections sent theirs
        (``live``), which keeps a descriptor of each until it has."""
        self._ours = ours
        self._find = find
        self._greetings = greetings
        endpoint = f"inproc://circusd-accepts-{secrets.token_hex(8)}"
        sock.monitor(endpoint, EVENTS)
        pair = sock.context.socket(zmq.PAIR)
        pair.linger = 0
        pair.rcvhwm = 0  # no limit: a report left out could hide a user
        pair.connect(endpoint)
        self.reports = pair  # readable when a report is waiting
        self._events: zmq.Socket[bytes] = zmq.Socket.shadow(pair.underlying)
        self._by_fd: dict[int, _Tracked] = {}
        self.serial = 0  # of the connection seen last

    def on(self, fd: int) -> tuple[int, Connection] | None:
        """The connection open on descriptor ``fd`` (as last read), with
        its serial: a connection seen later has a higher one."""
        tracked = self._by_fd.get(fd)
        return None if tracked is None else (tracked.serial, tracked.connection)

    def oldest(self) -> int:
        """The serial of the connection open that was seen first."""
        return min((t.serial for t in self._by_fd.values()), default=self.serial + 1)

    def live(self) -> list[Connection]:
        """The connections open now that have sent their greeting."""
        return [t.connection for t in self._by_fd.values() if t.check()]

    def update(self) -> list[Connection]:
        """Read the reports waiting; the connections that went away after
        sending their greeting, or that may have (those never seen too)."""
        gone = []
        events = self._drain()
        while events:
            seen = {i: self._look(fd) for i, (new, fd) in enumerate(events) if new}
            more = self._drain()
            later = [fd for _, fd in events + more]
            for i, (new, fd) in enumerate(events):
                old = self._by_fd.pop(fd, None)
                if old is not None:
                    if old.check():  # it may have been asked about
                        gone.append(old.connection)
                    old.let_go()
                if new:
                    if fd in later[i + 1 :]:
                        seen[i].let_go()
                        seen[i] = _Tracked(unseen(), None)
                    self.serial += 1
                    seen[i].serial = self.serial
                    self._by_fd[fd] = seen[i]
            events = more
        return gone

    def _drain(self) -> list[tuple[bool, int]]:
        events: list[tuple[bool, int]] = []
        while int(self._events.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # cheapest ask
            frames = self._events.recv_multipart()
            event = int.from_bytes(frames[0][:2], "little")
            fd = int.from_bytes(frames[0][2:6], "little", signed=True)
            events.append((event == zmq.EVENT_ACCEPTED, fd))
        return events

    def _look(self, fd: int) -> _Tracked:
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            return _Tracked(unseen(), None)
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in _INET:
                raise ValueError("not a tcp socket")
            local = _packed(sock.family, sock.getsockname())
            remote = _packed(sock.family, sock.getpeername())
        except (OSError, ValueError):
            sock.close()
            return _Tracked(unseen(), None)
        if not self._ours(local):
            sock.close()
            return _Tracked(unseen(), None)
        client = self._find(remote, local)
        if client is not None and client.inode:
            uid = client.uid
        elif client is None and not _same_host(remote[0], local[0]):
            uid = REMOTE
        else:  # closed (time-wait, orphaned, reset): nobody owns it
            uid = UNKNOWN
        connection = Connection((remote[0], uid), local, remote)
        if not self._greetings:
            sock.close()
            return _Tracked(connection, None)
        tracked = _Tracked(connection, sock)
        tracked.check()
        return tracked

    def close(self) -> None:
        for tracked in self._by_fd.values():
            tracked.let_go()
        self._by_fd.clear()
        self.reports.close()


def _same_host(peer: bytes, ours: bytes) -> bool:
    """Whether ``peer`` is this host: a loopback address, or the address of
    our own end (a local user connecting to one of the host's addresses)."""
    return peer == ours or ipaddress.ip_address(peer).is_loopback


def _packed(family: int, address: Any) -> Address:
    host = str(address[0]).partition("%")[0]
    return _plain(socket.inet_pton(family, host)), int(address[1])
