"""The kernel's tcp sockets, as circusd reads them to tell who is calling
(``circusd.control.auth``): a dump of every established connection, or one
connection looked up by its addresses.

Both use the sock_diag netlink interface; where it is not available, the
dump reads /proc/net/tcp{,6} instead.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

_ESTABLISHED, _CLOSE_WAIT = "01", "08"
Address = tuple[bytes, int]  # packed IPv4 or IPv6 address, port


@dataclass(frozen=True)
class _Entry:
    local: Address
    remote: Address
    state: str
    uid: int
    inode: int
    received: int | None = None  # bytes received on it, when the kernel says


def _address(text: str) -> Address:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word of the address in host byte order.
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return _plain(packed), int(port, 16)


def _plain(packed: bytes) -> bytes:
    """IPv4-mapped IPv6 addresses as the IPv4 address they stand for."""
    if len(packed) == 16 and packed[:12] == bytes(10) + b"\xff\xff":
        return packed[12:]
    return packed


_SOCK_DIAG = 4  # NETLINK_SOCK_DIAG
# The older inet_diag request (struct inet_diag_req), which the kernel serves
# for every address family at once: IPv4, IPv6 and IPv4-mapped IPv6 sockets
# in one walk of its connection hash, where SOCK_DIAG_BY_FAMILY takes one
# walk per family. The walk, not the reply, is what a dump costs.
_TCPDIAG_GETSOCK = 18
_SOCK_DIAG_BY_FAMILY = 20  # one family, and the only way to ask for one socket
_REQUEST = 0x1  # NLM_F_REQUEST
_NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE
_LISTEN = "0A"
_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_STATES = (1 << 1) | (1 << 8)  # TCP_ESTABLISHED, TCP_CLOSE_WAIT
_INFO = 2  # INET_DIAG_INFO: the socket's struct tcp_info
_BYTES_RECEIVED = slice(128, 136)  # tcpi_bytes_received, Linux 4.1 and later
# libzmq asks the ZAP handler about a connection once its client's ZMTP 3
# greeting (64 bytes) is in: one that sent less cannot be the one asked about.
GREETING = 64


def read_tcp_table() -> list[_Entry]:
    """Established (and closing) tcp sockets from the kernel's sock_diag
    netlink interface; /proc/net/tcp where that is not available. The
    netlink dump is one walk of the kernel's connection hash, about 1.3 ms
    on the test machine; the /proc files take several (the kernel formats
    them by walking every hash bucket, once per file)."""
    try:
        return _diag_table()
    except OSError as exc:
        log.debug("sock_diag unavailable, reading /proc/net/tcp error=%s", exc)
        return _proc_table()


def _diag_table() -> list[_Entry]:
    entries: list[_Entry] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        # family (any), source and destination prefix lengths, extensions,
        # the socket id (zeros: all), states, tables (unused): 60 bytes
        request = struct.pack("=BBBB", 0, 0, 0, 1 << (_INFO - 1)) + bytes(48)
        request += struct.pack("=II", _STATES, 0)
        header = struct.pack(
            "=IHHII", 16 + len(request), _TCPDIAG_GETSOCK, _DUMP_REQUEST, 1, 0
        )
        netlink.send(header + request)
        _read_dump(netlink, entries)
    return entries


def _read_dump(netlink: socket.socket, entries: list[_Entry]) -> None:
    while True:
        data = netlink.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == _NLMSG_DONE:
                return
            _check(data, offset)
            entries.append(_parse(data, offset, length))
            offset += (length + 3) & ~3
        if not data:
            return


def _check(data: bytes, offset: int) -> None:
    """Raise the error a netlink reply at ``offset`` carries, if it is one."""
    if struct.unpack_from("=H", data, offset + 4)[0] == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, offset + 16)[0]
        raise OSError(code, os.strerror(code))


def _parse(data: bytes, offset: int, length: int) -> _Entry:
    """The struct inet_diag_msg (and its tcp_info) in the message at ``offset``."""
    body = offset + 16
    state = data[body + 1]
    ports = struct.unpack_from(">HH", data, body + 4)
    source = data[body + 8 : body + 24]
    destination = data[body + 24 : body + 40]
    uid, inode = struct.unpack_from("=II", data, body + 64)
    width = 4 if data[body] == socket.AF_INET else 16
    return _Entry(
        (_plain(source[:width]), ports[0]),
        (_plain(destination[:width]), ports[1]),
        f"{state:02X}",
        uid,
        inode,
        _bytes_received(data, body + 72, offset + length),
    )


class Lookup:
    """One tcp socket at a time, found by its own address and its peer's: a
    single hash lookup in the kernel, whatever the number of connections.
    Keeps a netlink socket open; ``close`` it."""

    def __init__(self) -> None:
        self._netlink: socket.socket | None = None
        self._sequence = 0

    def find(self, local: Address, remote: Address) -> _Entry | None:
        """The connected socket whose end is ``local`` and whose peer is
        ``remote``, in any state; None when this host has none."""
        netlink = self._socket()
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        family = socket.AF_INET if len(local[0]) == 4 else socket.AF_INET6
        # (no extension asked for: the owner and inode are in the reply's
        # fixed part, and tcp_info would double what the kernel sends)
        request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        request += struct.pack(">HH", local[1], remote[1])
        request += local[0].ljust(16, b"\0") + remote[0].ljust(16, b"\0")
        request += struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
        header = struct.pack(
            "=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _REQUEST,
            self._sequence, 0,
        )  # fmt: skip
        netlink.send(header + request)
        while True:  # a late answer to an earlier question is skipped
            data = netlink.recv(1 << 16)
            length, _, _, sequence = struct.unpack_from("=IHHI", data)
            if sequence == self._sequence:
                break
        try:
            _check(data, 0)
        except FileNotFoundError:
            return None
        entry = _parse(data, 0, length)
        # Where no connection matches, the kernel answers with a socket
        # listening on ``local``: only the exact connection is an answer.
        if (entry.local, entry.remote) != (local, remote) or entry.state == _LISTEN:
            return None
        return entry

    def _socket(self) -> socket.socket:
        if self._netlink is None:
            netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _SOCK_DIAG)
            netlink.settimeout(1.0)
            self._netlink = netlink
        return self._netlink

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None


def _bytes_received(data: bytes, start: int, end: int) -> int | None:
    """tcpi_bytes_received from the attributes after an inet_diag_msg."""
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            return None
        if kind == _INFO and length - 4 >= _BYTES_RECEIVED.stop:
            info = data[start + 4 : start + length]
            return int.from_bytes(info[_BYTES_RECEIVED], sys.byteorder)
        start += (length + 3) & ~3
    return None


def _proc_table() -> list[_Entry]:
    entries = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as table:
                lines = table.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            entries.append(
                _Entry(
                    _address(fields[1]),
                    _address(fields[2]),
                    fields[3],
                    int(fields[7]),
                    int(fields[9]),
                )
            )
    return entries
