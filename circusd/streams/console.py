"""StdoutStream and FancyStdoutStream: output on circusd's own stdout or
stderr (the journal, under systemd)."""

from __future__ import annotations

import datetime

from circusd.config.options import STREAM_COLORS
from circusd.errors import ValueProblem
from circusd.streams.base import Stream, TextLines, write_all


class StdoutStream(Stream):
    """The child's bytes, as they are, on circusd's stdout (stdout_stream)
    or stderr (stderr_stream)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes, pid: int) -> None:
        write_all(self._fd, data)


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
        self._fd = fd
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
        write_all(self._fd, text.encode())
