"""StdoutStream and FancyStdoutStream: output on circusd's own stdout or
stderr (the journal, under systemd).

Those descriptors are shared with whoever started circusd (and with the
watchers that inherit them), so they stay blocking; a thread per descriptor
writes instead of the event loop. A reader that stalls (a full pipe, a busy
journal) holds up that thread only: up to QUEUE_LIMIT bytes wait, the rest
is dropped and counted, and the children's pipes keep being read.
"""

from __future__ import annotations

import datetime
import logging
import threading

from circusd.config.options import STREAM_COLORS
from circusd.errors import ValueProblem
from circusd.streams.base import Stream, TextLines, write_all

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1 << 20


class Console:
    """circusd's stdout or stderr, written by a thread of its own."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._waiting: list[bytes] = []
        self._size = 0
        self.dropped = 0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def write(self, data: bytes) -> None:
        with self._wake:
            if self._size + len(data) > QUEUE_LIMIT:
                if not self.dropped:
                    log.warning("output dropped fd=%d reason=%r", self._fd, "not read")
                self.dropped += len(data)
                return
            self._waiting.append(data)
            self._size += len(data)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"console-{self._fd}", daemon=True
                )
                self._thread.start()
            self._wake.notify_all()  # the writer, not only a flush waiting

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
                data = b"".join(self._waiting)
                self._waiting.clear()
            write_all(self._fd, data)  # an error drops the data: nothing to tell
            with self._wake:
                self._size -= len(data)
                self._wake.notify_all()
                dropped, self.dropped = self.dropped, 0
            if dropped:  # the reader took something again
                log.warning(
                    "output flows again fd=%d dropped_bytes=%d", self._fd, dropped
                )

    def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until everything queued is written."""
        with self._wake:
            self._wake.wait_for(lambda: not self._size, timeout)


_consoles: dict[int, Console] = {}
_consoles_lock = threading.Lock()


def console(fd: int) -> Console:
    with _consoles_lock:
        return _consoles.setdefault(fd, Console(fd))


def flush_all(timeout: float = 2.0) -> None:
    """At exit: what the children wrote last, unless nobody reads it."""
    for each in list(_consoles.values()):
        each.flush(timeout)


class StdoutStream(Stream):
    """The child's bytes, as they are, on circusd's stdout (stdout_stream)
    or stderr (stderr_stream)."""

    def __init__(self, fd: int) -> None:
        self._console = console(fd)

    def write(self, data: bytes, pid: int) -> None:
        self._console.write(data)


class FancyStdoutStream(Stream):
    """A text view: each line as ``TIME [WATCHER:PID] LINE``, decoded by the
    rule in streams.base, in ``color`` when one is set."""

    def __init__(
        self, fd: int, name: str, time_format: str, color: str | None = None
    ) -> None:
        if color is not None and color not in STREAM_COLORS:
            raise ValueProblem(
                f"unknown color {color!r}; use one of {', '.join(STREAM_COLORS)}"
            )
        self._console = console(fd)
        self._name = name
        self._time_format = time_format
        self._start, self._stop = "", ""
        if color is not None:
            self._start = f"\033[0;3{STREAM_COLORS.index(color) + 1}m"
            self._stop = "\033[0m"
        self._lines = TextLines(self._emit)

    def write(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        self._lines.end(pid)

    def _emit(self, line: str, pid: int) -> None:
        stamp = datetime.datetime.now().strftime(self._time_format)
        text = f"{self._start}{stamp} [{self._name}:{pid}] {line}{self._stop}\n"
        self._console.write(text.encode())
