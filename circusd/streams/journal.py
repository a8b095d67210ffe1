"""JournalStream and SyslogStream: each line of output one log entry, sent
to the local log daemon in its own protocol, with the watcher's name as
the identifier and the child's pid. Both are text views (see the rule in
streams.base) and never block: see streams.datagram.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import time

from circusd.config.options import SYSLOG_FACILITIES, SYSLOG_PRIORITIES
from circusd.streams.base import STDERR, STDOUT, STREAM_NAMES, Stream, TextLines
from circusd.streams.datagram import sender

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"

DEFAULT_PRIORITY = {
    STDOUT: SYSLOG_PRIORITIES.index("info"),
    STDERR: SYSLOG_PRIORITIES.index("err"),
}
DEFAULT_FACILITY = SYSLOG_FACILITIES.index("daemon")


class _Lines(Stream):
    """Text lines from the child, one entry each."""

    def __init__(
        self, watcher: str, which: int, priority: int | None, facility: int | None
    ) -> None:
        self._watcher = watcher
        self._stream = STREAM_NAMES[which]
        self._priority = DEFAULT_PRIORITY[which] if priority is None else priority
        self._facility = DEFAULT_FACILITY if facility is None else facility
        self._lines = TextLines(self._entry)

    def write(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        self._lines.end(pid)

    def _entry(self, line: str, pid: int) -> None:
        raise NotImplementedError


# -- the journal's native protocol -------------------------------------------------


def journal_field(name: str, value: bytes) -> bytes:
    """One field: NAME=value, or, for a value with a newline, NAME, a newline,
    the length as 64-bit little-endian, the value and a newline."""
    key = name.encode("ascii")
    if b"\n" not in value:
        return key + b"=" + value + b"\n"
    return key + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_SEALS |= fcntl.F_SEAL_SEAL


def send_sealed(sock: socket.socket, datagram: bytes) -> None:
    """An entry too large for one datagram: written to a sealed memfd whose
    descriptor is sent alone, as the journal's protocol allows."""
    fd = os.memfd_create("circusd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(datagram)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        rights = array.array("i", [fd])
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    finally:
        os.close(fd)


class JournalStream(_Lines):
    """Each line an entry in the systemd journal: MESSAGE, PRIORITY,
    SYSLOG_FACILITY, SYSLOG_IDENTIFIER (the watcher's name), SYSLOG_PID and
    OBJECT_PID (the child's pid; journald then adds the child's own
    OBJECT_ fields), CIRCUSD_WATCHER and CIRCUSD_STREAM (stdout, stderr)."""

    def __init__(
        self,
        watcher: str,
        which: int = STDOUT,
        priority: int | None = None,
        facility: int | None = None,
        address: str = JOURNAL_SOCKET,
    ) -> None:
        super().__init__(watcher, which, priority, facility)
        self._sender = sender(address, "journal", send_sealed)
        self._fixed = b"".join(
            (
                journal_field("PRIORITY", b"%d" % self._priority),
                journal_field("SYSLOG_FACILITY", b"%d" % self._facility),
                journal_field("SYSLOG_IDENTIFIER", watcher.encode()),
                journal_field("CIRCUSD_WATCHER", watcher.encode()),
                journal_field("CIRCUSD_STREAM", self._stream.encode()),
            )
        )

    def _entry(self, line: str, pid: int) -> None:
        message = line.encode()
        entry = b"".join(
            (
                journal_field("MESSAGE", message),
                self._fixed,
                b"SYSLOG_PID=%d\nOBJECT_PID=%d\n" % (pid, pid),
            )
        )
        self._sender.send(entry, len(message) + 1)


# -- syslog on /dev/log ------------------------------------------------------------

_MONTHS = (
    *("Jan", "Feb", "Mar", "Apr", "May", "Jun"),
    *("Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
)


def syslog_tag(name: str) -> str:
    """The watcher's name as a tag syslog readers parse: characters other
    than letters, digits, ``_``, ``-`` and ``.`` become ``_``."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name
    )


def syslog_message(
    priority: int, facility: int, tag: str, pid: int, text: str, now: float
) -> bytes:
    """The form glibc's syslog(3) sends to /dev/log, RFC 3164's:
    ``<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE``, local time, no newline."""
    moment = time.localtime(now)
    month = _MONTHS[moment.tm_mon - 1]
    stamp = f"{month} {moment.tm_mday:2d} {time.strftime('%H:%M:%S', moment)}"
    head = f"<{facility * 8 + priority}>{stamp} {tag}[{pid}]: "
    return (head + text).encode()


class SyslogStream(_Lines):
    """Each line a message on /dev/log, in the RFC 3164 form of syslog(3),
    tagged with the watcher's name and the child's pid."""

    def __init__(
        self,
        watcher: str,
        which: int = STDOUT,
        priority: int | None = None,
        facility: int | None = None,
        address: str = SYSLOG_SOCKET,
    ) -> None:
        super().__init__(watcher, which, priority, facility)
        self._tag = syslog_tag(watcher)
        self._sender = sender(address, "syslog")

    def _entry(self, line: str, pid: int) -> None:
        message = syslog_message(
            self._priority, self._facility, self._tag, pid, line, time.time()
        )
        self._sender.send(message, len(line.encode()) + 1)
