"""Reading the children's pipes into a watcher's streams.

A pipe is read only when it is readable and unregistered at its end, so a
child that closes its stdout costs nothing afterwards. When a process
exits, what is left in its pipes is read at once; a pipe that another
process (a grandchild) still holds is read on until its end. When the
watcher stops, it waits (at most DRAIN_TIMEOUT) for every pipe to reach
its end before the streams close, so nothing written before the stop,
not even by a SIGTERM handler, is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os

from circusd import fdlimit
from circusd.streams.base import Stream

log = logging.getLogger(__name__)

READ_SIZE = 65536
DRAIN_READS = 32  # reads at once when a process exits: at most 2 MiB
DRAIN_TIMEOUT = 2.0  # seconds a stopping watcher waits for its pipes to end


class PipeReader:
    """Reads one pipe when it is readable and feeds a stream."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        stream: Stream,
        pid: int,
        ended: asyncio.Event,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._stream = stream
        self._pid = pid
        self._ended = ended  # set when this pipe is done
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    @property
    def open(self) -> bool:
        return self._fd >= 0

    @property
    def pid(self) -> int:
        return self._pid

    def _readable(self) -> bool:
        """Read once; False when nothing more is there for now."""
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.close()
            return False
        self._stream.write(data, self._pid)
        return True

    def read_available(self) -> None:
        """Read what is in the pipe now (bounded), without waiting."""
        for _ in range(DRAIN_READS):
            if self._fd < 0 or not self._readable():
                return

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._stream.end(self._pid)
        self._ended.set()


class Output:
    """A watcher's two streams (1: stdout, 2: stderr) and its processes'
    pipes."""

    def __init__(self, streams: dict[int, Stream]) -> None:
        self.streams = streams
        self._readers: dict[int, list[PipeReader]] = {}
        self._exited: list[PipeReader] = []  # still open after their process
        self._ended = asyncio.Event()
        self._closed = False

    def captures(self, which: int) -> bool:
        return which in self.streams

    def attach(
        self, loop: asyncio.AbstractEventLoop, pid: int, pipes: dict[int, int]
    ) -> None:
        """Start reading ``pipes`` (stream number -> fd, now ours) of ``pid``."""
        readers = []
        for which, fd in pipes.items():
            fdlimit.make_room(fd)
            readers.append(PipeReader(loop, fd, self.streams[which], pid, self._ended))
        if readers:
            self._readers[pid] = readers

    def exited(self, pid: int) -> None:
        """``pid`` exited: read what it left in its pipes."""
        self._exited = [reader for reader in self._exited if reader.open]
        for reader in self._readers.pop(pid, []):
            reader.read_available()
            if reader.open:
                self._exited.append(reader)

    async def drained(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait until the pipes of exited processes end (at most
        ``timeout``), then close those still open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._exited:
            self._exited = [reader for reader in self._exited if reader.open]
            left = deadline - loop.time()
            if not self._exited or left <= 0:
                break
            self._ended.clear()
            try:
                await asyncio.wait_for(self._ended.wait(), left)
            except TimeoutError:
                pass
        for reader in self._exited:
            log.warning(
                "output pipe still open after the process stopped, closing it "
                "pid=%d (a process it started may still hold it)",
                reader.pid,
            )
            reader.read_available()
            reader.close()
        self._exited = []

    def open(self) -> None:
        """Take the streams up again after ``close``."""
        if self._closed:
            self._closed = False
            for stream in self.streams.values():
                stream.open()

    def reopen(self) -> None:
        if not self._closed:
            for stream in self.streams.values():
                stream.reopen()

    def close(self) -> None:
        self._closed = True
        for stream in self.streams.values():
            stream.close()

    def park(self) -> None:
        """Just built for a watcher that is not running."""
        self._closed = True
        for stream in self.streams.values():
            stream.park()

    def release(self) -> None:
        self._closed = True
        for stream in self.streams.values():
            stream.release()
