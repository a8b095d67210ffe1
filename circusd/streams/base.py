"""What every stream shares: the interface, line assembly, and the one rule
by which the text views turn a child's bytes into text.

The rule (docs/configuration.md repeats it): output is decoded as UTF-8,
separately for each process and incrementally, so a character split
between two reads is decoded whole. A byte sequence that is not UTF-8
becomes U+FFFD, one for each maximal invalid sequence (Python's
``replace`` handler, as the Unicode standard recommends), and so does a
NUL byte, which ends a string for syslog readers. Nothing else changes.
File streams never decode: they write the child's bytes.
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import Callable

STDOUT, STDERR = 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


class Stream:
    """A sink for one watcher's stdout or stderr, shared by its processes.

    A stream is open once built; ``close`` releases it when the watcher
    stops and ``open`` takes it up again at the next start.
    """

    def write(self, data: bytes, pid: int) -> None:
        raise NotImplementedError

    def end(self, pid: int) -> None:
        """The process's pipe reached its end: write what is held for it."""

    def open(self) -> None:
        """Take the sink up again after ``close``."""

    def reopen(self) -> None:
        """Reopen files (after an outside log rotation); a closed stream
        stays closed."""

    def close(self) -> None:
        """Release the sink until ``open`` (the watcher stopped)."""

    def park(self) -> None:
        """Just built, for a watcher that is not running yet."""
        self.close()

    def release(self) -> None:
        """Release the sink for good (the watcher or its config is gone)."""
        self.close()


class LineBuffer:
    """Holds each process's unfinished last line, so that the lines of
    processes sharing one sink never mix. A held line is written when it
    ends, when the process's pipe ends, when it reaches LIMIT bytes, or
    HOLD seconds after it was last added to (a prompt without a newline)."""

    LIMIT = 65536
    HOLD = 1.0

    def __init__(self, emit: Callable[[bytes, int], None]) -> None:
        self._emit = emit
        self._partial: dict[int, bytes] = {}
        self._added: dict[int, float] = {}  # when a held line last grew
        # One timer per process at most, moved on only when it fires: a busy
        # pipe does not make and cancel a timer at every read.
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def feed(self, data: bytes, pid: int) -> None:
        held = self._partial.pop(pid, None)
        if held:
            data = held + data
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            self._emit(data, pid)
            return
        if cut:
            self._emit(data[:cut], pid)
        rest = data[cut:]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if len(rest) >= self.LIMIT or loop is None:
            self._emit(rest, pid)
            return
        self._partial[pid] = rest
        self._added[pid] = loop.time()
        if pid not in self._timers:
            self._timers[pid] = loop.call_later(self.HOLD, self._expire, pid, loop)

    def _expire(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        del self._timers[pid]
        if pid not in self._partial:
            return
        left = self._added[pid] + self.HOLD - loop.time()
        if left > 0:
            self._timers[pid] = loop.call_later(left, self._expire, pid, loop)
            return
        self.flush(pid)

    def flush(self, pid: int) -> None:
        """Write the held line now, unfinished."""
        rest = self.take(pid)
        if rest:
            self._emit(rest, pid)

    def end(self, pid: int) -> None:
        self.flush(pid)

    def take(self, pid: int) -> bytes:
        """Forget the held line and return it."""
        timer = self._timers.pop(pid, None)
        if timer is not None:
            timer.cancel()
        self._added.pop(pid, None)
        return self._partial.pop(pid, b"")


_decoder = codecs.getincrementaldecoder("utf-8")


class TextLines:
    """Lines of text from each process's bytes, by the rule above.

    ``emit`` gets each line without its newline; an unfinished line that
    LineBuffer lets go (a prompt, a line over its limit) comes as a line
    of its own.
    """

    def __init__(self, emit: Callable[[str, int], None]) -> None:
        self._emit = emit
        self._lines = LineBuffer(self._piece)
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}

    def feed(self, data: bytes, pid: int) -> None:
        self._lines.feed(data, pid)

    def end(self, pid: int) -> None:
        rest = self._lines.take(pid)
        decoder = self._decoders.pop(pid, None)
        if decoder is None:
            decoder = _decoder(errors="replace")
        self._send(decoder.decode(rest, final=True), pid)

    def _piece(self, data: bytes, pid: int) -> None:
        decoder = self._decoders.get(pid)
        if decoder is None:
            decoder = self._decoders[pid] = _decoder(errors="replace")
        self._send(decoder.decode(data), pid)

    def _send(self, text: str, pid: int) -> None:
        if not text:
            return
        lines = text.replace("\0", "\ufffd").split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            self._emit(line, pid)


def write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write everything: how much was written, and the error that stopped
    it, if one did."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except OSError as exc:
            return done, exc
    return done, None
