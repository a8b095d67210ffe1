"""Sending datagrams to a local log daemon (journald, syslog) without ever
blocking the event loop.

One non-blocking AF_UNIX datagram socket per address is shared by every
stream that sends there. It is connected, so that the kernel can say when
the receiver has room again: a datagram that does not fit now waits in a
queue (up to QUEUE_LIMIT bytes) and is sent when the socket is writable.
Beyond that, and while the receiver is missing, output is dropped; the
first drop is logged, and the number of bytes dropped once sending works
again. A receiver that restarted (a new socket at the same path) is
reconnected to.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1 << 20
RETRY = 1.0  # seconds between two attempts to connect to a missing receiver
_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.ECONNRESET)
_FULL = (errno.EAGAIN, errno.ENOBUFS)

# Sends one datagram that the socket refused as too large, another way
# (the journal's memfd); raises OSError as socket.send does.
Oversize = Callable[[socket.socket, bytes], None]


class Sender:
    def __init__(self, address: str, what: str, oversize: Oversize | None) -> None:
        self.address = address
        self._what = what  # "journal" or "syslog", for the log
        self._oversize = oversize
        self._socket: socket.socket | None = None
        self._retry_at = 0.0
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued = 0
        self._writer: asyncio.AbstractEventLoop | None = None
        self._failure: str | None = None
        self._dropped = 0

    def send(self, datagram: bytes, size: int) -> None:
        """Send, queue or drop ``datagram``; ``size`` is what it carries of
        the child's output, for the count of dropped bytes."""
        if self._queue:
            self._enqueue(datagram, size)
            return
        result = self._try(datagram)
        if result is None:
            self._sent()
        elif result in _FULL:
            self._enqueue(datagram, size)
        else:
            self._drop(size, result)

    # -- one attempt -----------------------------------------------------------------

    def _try(self, datagram: bytes) -> int | None:
        """Send now: None when sent, else the errno that stopped it."""
        for _ in range(2):  # a second time after reconnecting
            sock = self._connected()
            if sock is None:
                return errno.ENOTCONN
            try:
                sock.send(datagram)
                return None
            except OSError as exc:
                code = exc.errno or errno.EIO
            if code == errno.EMSGSIZE and self._oversize is not None:
                try:
                    self._oversize(sock, datagram)
                    return None
                except OSError as exc:
                    code = exc.errno or errno.EIO
            if code not in _GONE:
                return code
            self._disconnect()
        return code

    def _connected(self) -> socket.socket | None:
        if self._socket is not None:
            return self._socket
        if time.monotonic() < self._retry_at:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            self._retry_at = time.monotonic() + RETRY
            self._log_failure(exc.errno or errno.EIO)
            return None
        self._socket = sock
        return sock

    def _disconnect(self) -> None:
        self._stop_writer()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- waiting for room ----------------------------------------------------------

    def _enqueue(self, datagram: bytes, size: int) -> None:
        if self._queued + len(datagram) > QUEUE_LIMIT or self._socket is None:
            self._drop(size, errno.EAGAIN)
            return
        self._queue.append((datagram, size))
        self._queued += len(datagram)
        if self._writer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()  # no loop to wait in: send or drop now
                return
            loop.add_writer(self._socket, self._flush)
            self._writer = loop

    def _flush(self) -> None:
        while self._queue:
            datagram, size = self._queue[0]
            result = self._try(datagram)
            if result in _FULL and self._writer is not None:
                return  # still full: wait for the next wake-up
            self._queue.popleft()
            self._queued -= len(datagram)
            if result is None:
                self._sent()
            else:
                self._drop(size, result)
        self._stop_writer()

    def _stop_writer(self) -> None:
        if self._writer is not None and self._socket is not None:
            self._writer.remove_writer(self._socket)
        self._writer = None

    # -- telling the operator ------------------------------------------------------

    def _drop(self, size: int, code: int) -> None:
        self._dropped += size
        self._log_failure(code)

    def _log_failure(self, code: int) -> None:
        if self._failure is None:
            self._failure = errno.errorcode.get(code, str(code))
            log.error(
                "cannot send output to %s address=%s error=%s "
                "(dropping output until it works again)",
                self._what,
                self.address,
                self._failure,
            )

    def _sent(self) -> None:
        if self._failure is not None:
            log.warning(
                "output reaches %s again address=%s dropped_bytes=%d",
                self._what,
                self.address,
                self._dropped,
            )
            self._failure, self._dropped = None, 0

    def close(self) -> None:
        """Drop what is queued and let go of the socket."""
        self._disconnect()
        self._queue.clear()
        self._queued = 0


_senders: dict[str, Sender] = {}


def close_all() -> None:
    while _senders:
        _senders.popitem()[1].close()


def sender(address: str, what: str, oversize: Oversize | None = None) -> Sender:
    """The one sender for ``address``."""
    found = _senders.get(address)
    if found is None:
        found = _senders[address] = Sender(address, what, oversize)
    return found
