"""The file streams: FileStream, WatchedFileStream, TimedRotatingFileStream.

They write exactly the bytes the child wrote (with ``time_format``, each
line gets a prefix; nothing else is added). Every file stream notices when
something outside renamed or removed its file (logrotate's ``create``
mode) and reopens the name at the next write. A file that cannot be
opened or written (disk full, I/O error) drops output without ever
blocking the child: the failure is logged once, and the number of bytes
dropped when it ends.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Callable

from circusd.errors import ValueProblem
from circusd.streams.base import LineBuffer, Stream, write_all
from circusd.streams.safeopen import directory_fd, exists, open_output
from circusd.users import KEEP, Identity

log = logging.getLogger(__name__)

RETRY = 1.0  # seconds between two attempts to open a file that failed
FOLLOW = 0.1  # seconds between two looks at the name, while writing


class FileStream(Stream):
    """Appends to a file; rotates by size when ``max_bytes`` is set.

    While output comes, the name is looked at (lstat) at most every FOLLOW
    seconds: after an outside rename, a tenth of a second of output may
    still go to the renamed file, as with any log rotation.

    The file is opened by ``open_output``: never through a symbolic link that
    someone other than root could have placed, and created owned by the
    watcher's user. Building the stream opens the file, so that a file that
    cannot be opened is reported with the config; later failures drop
    output, as said above, and opening is tried again at most once a second.
    """

    def __init__(
        self,
        filename: str,
        max_bytes: int = 0,
        backup_count: int = 0,
        time_format: str | None = None,
        owner: Identity | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.filename = os.path.abspath(filename)
        self._directory, self._name = os.path.split(self.filename)
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._time_format = time_format
        self._owner = owner or KEEP
        self._fd = -1
        self._inode = (0, 0)  # (st_dev, st_ino) of the open file
        self._size = 0
        self._wanted = True  # between open() and close()
        self._monotonic = monotonic
        self._retry_at = 0.0
        self._follow_at = 0.0
        self._failure: str | None = None  # what is failing, once logged
        self._dropped = 0
        self._lines = LineBuffer(self._emit)
        with directory_fd(self._directory) as directory:
            self._take(open_output(directory, self._name, self._owner))

    # -- the file ------------------------------------------------------------------

    def _take(self, fd: int) -> None:
        info = os.fstat(fd)
        self._fd, self._inode, self._size = fd, (info.st_dev, info.st_ino), info.st_size

    def _try_open(self) -> None:
        try:
            with directory_fd(self._directory) as directory:
                self._take(open_output(directory, self._name, self._owner))
        except OSError as exc:
            self._retry_at = self._monotonic() + RETRY
            self._failing("cannot open", exc)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def open(self) -> None:
        self._wanted = True
        if self._fd < 0:
            self._try_open()

    def reopen(self) -> None:
        if self._wanted:
            self._close_fd()
            self._try_open()

    def close(self) -> None:
        self._wanted = False
        self._close_fd()
        if self._failure is not None:
            log.warning(
                "closed failing output file=%s dropped_bytes=%d",
                self.filename,
                self._dropped,
            )
            self._failure, self._dropped = None, 0

    # -- writing -------------------------------------------------------------------

    def write(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        self._lines.end(pid)

    def _emit(self, data: bytes, pid: int) -> None:
        if self._time_format:
            stamp = datetime.datetime.now().strftime(self._time_format)
            data = prefixed(data, f"{stamp} [{pid}] | ")
        now = self._monotonic()
        if self._fd >= 0 and now >= self._follow_at:
            self._follow_at = now + FOLLOW
            self._follow()
        if self._fd >= 0 and self._rotation_due():
            self._rotate_safely()
        if self._fd < 0 and now >= self._retry_at:
            self._try_open()
        if self._fd < 0:
            self._dropped += len(data)
            return
        written, error = write_all(self._fd, data)
        self._size += written
        if error is not None:
            self._failing("cannot write", error)
            self._dropped += len(data) - written
            return
        if self._failure is not None:
            log.warning(
                "output file works again file=%s dropped_bytes=%d",
                self.filename,
                self._dropped,
            )
            self._failure, self._dropped = None, 0

    def _failing(self, action: str, exc: OSError) -> None:
        if self._failure is None:
            self._failure = action
            log.error(
                "%s output file=%s error=%s (dropping output until it works again)",
                action,
                self.filename,
                exc.strerror or exc,
            )

    def _follow(self) -> None:
        """Reopen the name if the open file is no longer there under it."""
        try:
            info = os.lstat(self.filename)
        except FileNotFoundError:
            pass
        except OSError:
            return  # cannot tell: keep writing where we are
        else:
            if (info.st_dev, info.st_ino) == self._inode:
                return
        self._close_fd()
        self._try_open()

    # -- rotation ------------------------------------------------------------------

    def _rotation_due(self) -> bool:
        return 0 < self._max_bytes <= self._size

    def _rotate_safely(self) -> None:
        try:
            self.rotate()
        except OSError as exc:
            self._close_fd()
            self._retry_at = self._monotonic() + RETRY
            self._failing("cannot rotate", exc)

    def rotate(self) -> None:
        if self._backup_count <= 0:
            os.ftruncate(self._fd, 0)  # our own file, whatever the path is now
            self._size = 0
            return
        self._close_fd()
        # Renames inside the directory opened without following links: they
        # move names, never write through them.
        with directory_fd(self._directory) as directory:
            for index in range(self._backup_count - 1, 0, -1):
                source = f"{self._name}.{index}"
                if exists(source, directory):
                    os.replace(
                        source,
                        f"{self._name}.{index + 1}",
                        src_dir_fd=directory,
                        dst_dir_fd=directory,
                    )
            if exists(self._name, directory):
                os.replace(
                    self._name,
                    f"{self._name}.1",
                    src_dir_fd=directory,
                    dst_dir_fd=directory,
                )
            self._take(open_output(directory, self._name, self._owner))


def prefixed(data: bytes, prefix: str) -> bytes:
    """``prefix`` before each line (only a newline ends a line)."""
    head = prefix.encode()
    lines = data.split(b"\n")
    unfinished = lines.pop()
    text = b"".join(head + line + b"\n" for line in lines)
    return text + head + unfinished if unfinished else text


class WatchedFileStream(FileStream):
    """Circus's stream that follows an outside log rotation. Every circusd
    file stream does that; this one never rotates the file itself."""

    def __init__(
        self,
        filename: str,
        time_format: str | None = None,
        owner: Identity | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(filename, 0, 0, time_format, owner, monotonic=monotonic)


# rotate_when: (seconds in one unit, the suffix of the rotated files)
_UNITS = {
    "S": (1, "%Y%m%d%H%M%S"),
    "M": (60, "%Y%m%d%H%M"),
    "H": (3600, "%Y%m%d%H"),
    "D": (86400, "%Y%m%d"),
    "MIDNIGHT": (86400, "%Y%m%d"),
    **{f"W{day}": (7 * 86400, "%Y%m%d") for day in range(7)},
}


def next_rollover(now: float, when: str, interval: int, utc: bool) -> float:
    """When a file started at ``now`` is rotated, as Circus does it.

    S, M, H and D: ``interval`` units later. MIDNIGHT: at the next midnight
    (``interval`` is not used, as in Circus). Wd: at the midnight that ends
    the next weekday d (0 is Monday), today included.
    """
    unit, _ = _UNITS[when]
    if when in ("S", "M", "H", "D"):
        return now + unit * interval
    zone = datetime.UTC if utc else None
    today = datetime.datetime.fromtimestamp(now, zone)
    days = 0 if when == "MIDNIGHT" else (int(when[1]) - today.weekday()) % 7
    midnight = datetime.datetime.combine(
        today.date() + datetime.timedelta(days=days + 1), datetime.time(), zone
    )
    return midnight.timestamp()


def _span(when: str, interval: int) -> int:
    """How long the period a rotated file covers is, for its name."""
    unit, _ = _UNITS[when]
    return unit * interval if when in ("S", "M", "H", "D") else unit


class TimedRotatingFileStream(FileStream):
    """Rotates every ``rotate_interval`` units of ``rotate_when``; the old
    file is renamed FILENAME.TIME, TIME being when its period began, in
    Circus's form (``%Y%m%d%H`` for hours, for one); ``backup_count`` of
    them are kept (all with 0)."""

    def __init__(
        self,
        filename: str,
        rotate_when: str,
        rotate_interval: int,
        backup_count: int,
        utc: bool,
        time_format: str | None,
        owner: Identity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._when = rotate_when.upper()
        if self._when not in _UNITS:
            raise ValueProblem(
                f"unknown rotate_when {rotate_when!r}; use S, M, H, D, "
                "MIDNIGHT or W0 to W6"
            )
        self._interval = max(rotate_interval, 1)
        self._utc = utc
        self._clock = clock
        super().__init__(filename, 0, backup_count, time_format, owner)
        started = os.fstat(self._fd).st_mtime if self._size else clock()
        self._rollover_at = next_rollover(started, self._when, self._interval, utc)

    def _rotation_due(self) -> bool:
        return self._clock() >= self._rollover_at

    def rotate(self) -> None:
        now = self._clock()
        began = self._rollover_at - _span(self._when, self._interval)
        zone = datetime.UTC if self._utc else None
        stamp = datetime.datetime.fromtimestamp(began, zone)
        self._rollover_at = next_rollover(now, self._when, self._interval, self._utc)
        self._close_fd()
        suffix = _UNITS[self._when][1]
        with directory_fd(self._directory) as directory:
            if exists(self._name, directory):
                os.replace(
                    self._name,
                    f"{self._name}.{stamp.strftime(suffix)}",
                    src_dir_fd=directory,
                    dst_dir_fd=directory,
                )
            self._prune(directory, suffix)
            self._take(open_output(directory, self._name, self._owner))

    def _prune(self, directory: int, suffix: str) -> None:
        if self._backup_count <= 0:
            return
        digits = len(datetime.datetime(2000, 1, 1).strftime(suffix))
        pattern = re.compile(re.escape(self._name) + rf"\.\d{{{digits}}}")
        # An O_PATH descriptor cannot be listed: open the directory itself.
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=directory)
        try:
            names = os.listdir(listing)
        finally:
            os.close(listing)
        old = sorted(name for name in names if pattern.fullmatch(name))
        for name in old[: -self._backup_count]:
            os.unlink(name, dir_fd=directory)
