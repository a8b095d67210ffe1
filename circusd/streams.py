"""Where a child's stdout and stderr go: the built-in stream classes.

Output is bytes end to end: a file stream writes exactly what the child
wrote. A pipe is read only when it is readable, and a stream that fails
(disk full, I/O error) drops data with one log line instead of blocking the
child.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping

from circusd.config import values as v
from circusd.errors import ValueProblem

log = logging.getLogger(__name__)

READ_SIZE = 65536


class Stream:
    """A sink for one watcher's stdout or stderr, shared by its processes."""

    def write(self, data: bytes, pid: int) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        """Reopen files (after an outside log rotation)."""

    def close(self) -> None:
        """Release the sink."""


class StdoutStream(Stream):
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes, pid: int) -> None:
        _write_all(self._fd, data)


class FancyStdoutStream(Stream):
    """Each line prefixed with a timestamp, the watcher name and the pid."""

    def __init__(self, fd: int, name: str, time_format: str) -> None:
        self._fd = fd
        self._name = name
        self._time_format = time_format
        self._partial: dict[int, bytes] = {}

    def write(self, data: bytes, pid: int) -> None:
        data = self._partial.pop(pid, b"") + data
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[pid] = rest
        stamp = datetime.datetime.now().strftime(self._time_format)
        prefix = f"{stamp} [{self._name}:{pid}] ".encode()
        _write_all(self._fd, b"".join(prefix + line + b"\n" for line in lines))


class FileStream(Stream):
    """Appends to a file; rotates by size when ``max_bytes`` is set."""

    def __init__(
        self,
        filename: str,
        max_bytes: int = 0,
        backup_count: int = 0,
        time_format: str | None = None,
    ) -> None:
        self.filename = filename
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._time_format = time_format
        self._fd = -1
        self._failed = 0
        self.reopen()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(self.filename, flags, 0o640)

    def reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = self._open()

    def write(self, data: bytes, pid: int) -> None:
        if self._time_format:
            stamp = datetime.datetime.now().strftime(self._time_format).encode()
            data = b"".join(stamp + b" " + line for line in data.splitlines(True))
        self.before_write()
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            if not self._failed:
                log.error(
                    "cannot write output file=%s error=%s (dropping output)",
                    self.filename,
                    exc.strerror,
                )
            self._failed += len(data)
            return
        if self._failed:
            log.warning(
                "output writable again file=%s dropped_bytes=%d",
                self.filename,
                self._failed,
            )
            self._failed = 0
        if self._max_bytes and os.fstat(self._fd).st_size >= self._max_bytes:
            self.rotate()

    def before_write(self) -> None:
        """Hook for subclasses that reopen or rotate by other rules."""

    def rotate(self, suffixes: Callable[[int], str] | None = None) -> None:
        os.close(self._fd)
        self._fd = -1
        if self._backup_count > 0:
            for index in range(self._backup_count - 1, 0, -1):
                source = f"{self.filename}.{index}"
                if os.path.exists(source):
                    os.replace(source, f"{self.filename}.{index + 1}")
            os.replace(self.filename, f"{self.filename}.1")
        else:
            os.truncate(self.filename, 0)
        self._fd = self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class WatchedFileStream(FileStream):
    """Reopens the file when something outside renamed or removed it."""

    def before_write(self) -> None:
        try:
            on_disk = os.stat(self.filename)
        except FileNotFoundError:
            self.reopen()
            return
        mine = os.fstat(self._fd)
        if (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
            self.reopen()


_INTERVALS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400}


class TimedRotatingFileStream(FileStream):
    """Rotates every ``rotate_interval`` units of ``rotate_when``."""

    def __init__(
        self,
        filename: str,
        rotate_when: str,
        rotate_interval: int,
        backup_count: int,
        utc: bool,
        time_format: str | None,
    ) -> None:
        when = rotate_when.upper()
        if when not in _INTERVALS and not (
            when.startswith("W") and when[1:] in "0123456"
        ):
            raise ValueProblem(f"unknown rotate_when {rotate_when!r}")
        self._period = _INTERVALS.get(when, 7 * 86400) * max(rotate_interval, 1)
        if self._period > 10**7:
            raise ValueProblem(f"rotation every {self._period}s is too far apart")
        self._utc = utc
        self._next = time.time() + self._period
        super().__init__(filename, 0, backup_count, time_format)

    def before_write(self) -> None:
        now = time.time()
        if now < self._next:
            return
        self._next = now + self._period
        os.close(self._fd)
        stamp = (
            datetime.datetime.utcfromtimestamp(now)
            if self._utc
            else datetime.datetime.fromtimestamp(now)
        )
        os.replace(self.filename, f"{self.filename}.{stamp:%Y-%m-%d_%H-%M-%S}")
        self._prune()
        self._fd = self._open()

    def _prune(self) -> None:
        if self._backup_count <= 0:
            return
        directory = os.path.dirname(self.filename) or "."
        base = os.path.basename(self.filename) + "."
        old = sorted(name for name in os.listdir(directory) if name.startswith(base))
        for name in old[: -self._backup_count]:
            os.unlink(os.path.join(directory, name))


_BUILTIN = (
    "FileStream",
    "WatchedFileStream",
    "TimedRotatingFileStream",
    "StdoutStream",
    "FancyStdoutStream",
)


def make_stream(conf: Mapping[str, str], watcher: str, which: int) -> Stream:
    """Build the stream for a ``stdout_stream.*``/``stderr_stream.*`` block."""
    name = conf.get("class", "").rsplit(".", 1)[-1]
    if conf.get("class", "").startswith("circus.stream."):
        pass  # Circus's own dotted names for the built-in classes
    elif "." in conf.get("class", ""):
        raise ValueProblem(
            f"stream class {conf['class']!r}: custom stream classes are not "
            f"supported; use one of {', '.join(_BUILTIN)}"
        )
    filename = conf.get("filename")
    time_format = conf.get("time_format")
    backups = v.integer(conf.get("backup_count", "5"))
    if name in ("StdoutStream", "FancyStdoutStream"):
        fd = sys.stdout.fileno() if which == 1 else sys.stderr.fileno()
        if name == "StdoutStream":
            return StdoutStream(fd)
        return FancyStdoutStream(fd, watcher, time_format or "%Y-%m-%d %H:%M:%S")
    if name in ("FileStream", "WatchedFileStream", "TimedRotatingFileStream"):
        if not filename:
            raise ValueProblem(f"{name} needs a filename")
        if name == "TimedRotatingFileStream":
            return TimedRotatingFileStream(
                filename,
                conf.get("rotate_when", "H"),
                v.integer(conf.get("rotate_interval", "1")),
                backups,
                v.boolean(conf.get("utc", "false")),
                time_format,
            )
        if name == "WatchedFileStream":
            return WatchedFileStream(filename, 0, 0, time_format)
        return FileStream(
            filename, v.size(conf.get("max_bytes", "0")), backups, time_format
        )
    raise ValueProblem(
        f"unknown stream class {conf.get('class')!r}; use one of {', '.join(_BUILTIN)}"
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class PipeReader:
    """Reads a child's pipe when it is readable and feeds a stream."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fd: int, stream: Stream, pid: int
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._stream = stream
        self._pid = pid
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._stream.write(data, self._pid)

    def drain(self) -> None:
        """Read what is left in the pipe (bounded), then close it."""
        for _ in range(64):
            if self._fd < 0:
                return
            self._readable()
        self.close()

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
