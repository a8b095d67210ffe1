"""Where a child's stdout and stderr go: the built-in stream classes.

Output is bytes end to end: a file stream writes exactly what the child
wrote. A pipe is read only when it is readable, and a stream that fails
(disk full, I/O error) drops data with one log line instead of blocking the
child.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping

from circusd.config import values as v
from circusd.config.options import STREAM_CLASSES
from circusd.errors import ValueProblem
from circusd.users import KEEP, Identity

log = logging.getLogger(__name__)

READ_SIZE = 65536


class Stream:
    """A sink for one watcher's stdout or stderr, shared by its processes."""

    def write(self, data: bytes, pid: int) -> None:
        raise NotImplementedError

    def end(self, pid: int) -> None:
        """The process's pipe reached its end: write what is held for it."""

    def reopen(self) -> None:
        """Reopen files (after an outside log rotation)."""

    def close(self) -> None:
        """Release the sink."""


class LineBuffer:
    """Holds each process's unfinished last line, so that the lines of
    processes sharing one file never mix. A held line is written when it
    ends, when the process's pipe ends, when it reaches LIMIT bytes, or
    HOLD seconds after it was last added to (a prompt without a newline)."""

    LIMIT = 65536
    HOLD = 1.0

    def __init__(self, emit: Callable[[bytes, int], None]) -> None:
        self._emit = emit
        self._partial: dict[int, bytes] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def feed(self, data: bytes, pid: int) -> None:
        data = self._partial.pop(pid, b"") + data
        cut = data.rfind(b"\n") + 1
        if cut:
            self._emit(data[:cut], pid)
        rest = data[cut:]
        self._cancel(pid)
        if len(rest) >= self.LIMIT:
            self._emit(rest, pid)
        elif rest:
            self._partial[pid] = rest
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.end(pid)
                return
            self._timers[pid] = loop.call_later(self.HOLD, self.end, pid)

    def end(self, pid: int) -> None:
        self._cancel(pid)
        rest = self._partial.pop(pid, b"")
        if rest:
            self._emit(rest, pid)

    def _cancel(self, pid: int) -> None:
        timer = self._timers.pop(pid, None)
        if timer is not None:
            timer.cancel()


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
        self._lines = LineBuffer(self._emit)

    def write(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        self._lines.end(pid)

    def _emit(self, data: bytes, pid: int) -> None:
        stamp = datetime.datetime.now().strftime(self._time_format)
        _write_all(self._fd, _prefixed(data, f"{stamp} [{self._name}:{pid}] "))


def _prefixed(data: bytes, prefix: str) -> bytes:
    head = prefix.encode()
    return b"".join(head + line for line in data.splitlines(True))


class FileStream(Stream):
    """Appends to a file; rotates by size when ``max_bytes`` is set.

    The file is opened by ``open_output``: never through a symbolic link that
    someone other than root could have placed, and created owned by the
    watcher's user. A file that cannot be (re)opened drops output, says so
    once, and is tried again at most once a second.
    """

    def __init__(
        self,
        filename: str,
        max_bytes: int = 0,
        backup_count: int = 0,
        time_format: str | None = None,
        owner: Identity | None = None,
    ) -> None:
        self.filename = os.path.abspath(filename)
        self._directory, self._name = os.path.split(self.filename)
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._time_format = time_format
        self._owner = owner or KEEP
        self._fd = -1
        self._failed = 0
        self._retry_at = 0.0
        self._lines = LineBuffer(self._emit)
        self._fd = self._open()

    def _open(self) -> int:
        with directory_fd(self._directory) as directory:
            return open_output(directory, self._name, self._owner)

    def reopen(self) -> None:
        self.close()
        try:
            self._fd = self._open()
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        """Opening failed: drop output until an attempt a second later works."""
        self._fd = -1
        self._retry_at = time.monotonic() + 1.0
        log.error(
            "cannot open output file=%s error=%s (dropping output)",
            self.filename,
            exc.strerror or exc,
        )

    def write(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        self._lines.end(pid)

    def _emit(self, data: bytes, pid: int) -> None:
        if self._time_format:
            stamp = datetime.datetime.now().strftime(self._time_format)
            data = _prefixed(data, f"{stamp} [{pid}] | ")
        try:
            self.before_write()
        except OSError as exc:
            self.close()
            self._lost(exc)
        if self._fd < 0 and time.monotonic() >= self._retry_at:
            self.reopen()
        if self._fd < 0:
            self._failed += len(data)
            return
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
            try:
                self.rotate()
            except OSError as exc:
                self.close()
                self._lost(exc)

    def before_write(self) -> None:
        """Hook for subclasses that reopen or rotate by other rules."""

    def rotate(self) -> None:
        if self._backup_count <= 0:
            os.ftruncate(self._fd, 0)  # our own file, whatever the path is now
            return
        self.close()
        # Renames inside the directory opened without following links: they
        # move names, never write through them.
        with directory_fd(self._directory) as directory:
            for index in range(self._backup_count - 1, 0, -1):
                source = f"{self._name}.{index}"
                if _exists(source, directory):
                    os.replace(
                        source,
                        f"{self._name}.{index + 1}",
                        src_dir_fd=directory,
                        dst_dir_fd=directory,
                    )
            if _exists(self._name, directory):
                os.replace(
                    self._name,
                    f"{self._name}.1",
                    src_dir_fd=directory,
                    dst_dir_fd=directory,
                )
            self._fd = open_output(directory, self._name, self._owner)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class WatchedFileStream(FileStream):
    """Reopens the file when something outside renamed or removed it."""

    def before_write(self) -> None:
        if self._fd < 0:
            return
        try:
            on_disk = os.lstat(self.filename)
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
        owner: Identity | None = None,
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
        super().__init__(filename, 0, backup_count, time_format, owner)

    def before_write(self) -> None:
        now = time.time()
        if now < self._next:
            return
        self._next = now + self._period
        self.close()
        stamp = (
            datetime.datetime.fromtimestamp(now, datetime.UTC)
            if self._utc
            else datetime.datetime.fromtimestamp(now)
        )
        with directory_fd(self._directory) as directory:
            if _exists(self._name, directory):
                os.replace(
                    self._name,
                    f"{self._name}.{stamp:%Y-%m-%d_%H-%M-%S}",
                    src_dir_fd=directory,
                    dst_dir_fd=directory,
                )
            self._prune(directory)
            self._fd = open_output(directory, self._name, self._owner)

    def _prune(self, directory: int) -> None:
        if self._backup_count <= 0:
            return
        base = self._name + "."
        old = sorted(name for name in os.listdir(directory) if name.startswith(base))
        for name in old[: -self._backup_count]:
            os.unlink(name, dir_fd=directory)


# -- opening output files safely ------------------------------------------------

_MAX_LINKS = 40  # symbolic links followed in one path, as the kernel allows
_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _trusted(directory: int) -> bool:
    """Only root (or circusd's own user) can change this directory's entries."""
    info = os.fstat(directory)
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & 0o022


def _exists(name: str, directory: int) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def directory_fd(path: str) -> Iterator[int]:
    """An O_PATH descriptor of the directory ``path``, reached one component
    at a time. A symbolic link is followed only where it lies in a directory
    that only root can change, so no user can redirect the walk."""
    fd = os.open("/", _DIRECTORY_FLAGS)
    try:
        pending = [part for part in path.split("/") if part not in ("", ".")]
        links = 0
        while pending:
            part = pending.pop(0)
            try:
                following = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                target = _trusted_link(fd, part, path)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(
                        errno.ELOOP, "too many symbolic links", path
                    ) from None
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIRECTORY_FLAGS)
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            os.close(fd)
            fd = following
        yield fd
    finally:
        os.close(fd)


def _trusted_link(directory: int, name: str, path: str) -> str:
    """The target of the link ``name``, if it may be followed."""
    try:
        target = os.readlink(name, dir_fd=directory)
    except OSError:
        raise OSError(errno.ENOTDIR, "not a directory", path) from None
    if not _trusted(directory):
        raise OSError(
            errno.ELOOP,
            f"symbolic link {name!r} in a directory other users can change",
            path,
        )
    return target


def open_output(directory: int, name: str, owner: Identity, mode: int = 0o640) -> int:
    """Open ``name`` in ``directory`` for appending, never following a link.

    A new file gets ``owner``'s uid and gid and ``mode``. An existing file
    must be a regular file with one link, owned by ``owner`` or, in a
    directory only root can change, by root: never someone else's file that
    the daemon would be tricked into writing.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=directory)
    except FileExistsError:
        fd = os.open(name, flags, dir_fd=directory)
        try:
            _check_existing(fd, directory, name, owner)
        except OSError:
            os.close(fd)
            raise
    else:
        try:
            _give(fd, owner, mode)
        except OSError:
            os.close(fd)
            raise
    os.set_blocking(fd, True)
    return fd


def _give(fd: int, owner: Identity, mode: int) -> None:
    uid = -1 if owner.uid is None else owner.uid
    gid = -1 if owner.gid is None else owner.gid
    if (uid, gid) != (-1, -1) and os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def _check_existing(fd: int, directory: int, name: str, owner: Identity) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", name)
    if info.st_nlink != 1:
        raise OSError(errno.EMLINK, "the file has other hard links", name)
    expected = os.geteuid() if owner.uid is None else owner.uid
    if info.st_uid == expected:
        return
    if info.st_uid in (0, os.geteuid()) and _trusted(directory):
        return
    raise OSError(
        errno.EPERM, f"the file belongs to uid {info.st_uid}, not {expected}", name
    )


_BUILTIN = STREAM_CLASSES


def builtin_stream(class_name: str) -> bool:
    """One of circusd's own stream classes (also by Circus's dotted names)."""
    name = class_name.rsplit(".", 1)[-1]
    dotted = "." in class_name
    return name in _BUILTIN and (not dotted or class_name.startswith("circus.stream."))


def make_stream(
    conf: Mapping[str, str], watcher: str, which: int, owner: Identity | None = None
) -> Stream:
    """Build the stream for a ``stdout_stream.*``/``stderr_stream.*`` block;
    files are created for ``owner`` (the watcher's user)."""
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
                owner,
            )
        if name == "WatchedFileStream":
            return WatchedFileStream(filename, 0, 0, time_format, owner)
        return FileStream(
            filename, v.size(conf.get("max_bytes", "0")), backups, time_format, owner
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
        self._stream.end(self._pid)
