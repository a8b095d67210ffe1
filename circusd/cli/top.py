"""``circusctl top``: watchers and processes, live, from the stats stream.

The stats endpoint is asked from the daemon (``globaloptions``) and reached
the way the control endpoint is, so ``--ssh`` carries it too. Once a second
the screen is drawn again from what the stream said (``topview``) and the
watchers' states (one ``status`` call). On a terminal it takes the whole
screen (plain ANSI sequences, the alternate screen) and reads single keys;
otherwise it prints one plain frame per second, or one JSON object per line
with ``--json``. Several hosts share one screen (``cli.topfleet``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import click
import zmq

from circusd.cli import remote
from circusd.cli.circusctl import (
    Failure,
    Settings,
    call,
    option,
)
from circusd.cli.topview import SORT_KEYS, SORTS, STALE_AFTER, TopView
from circusd.client import CallError, ReplyError, parse_endpoint
from circusd.client.errors import InvalidEndpoint

PERIOD = 1.0  # seconds between two screens
FIRST_DATA_WAIT = 0.25  # seconds from the first message to the first full screen


class Terminal:
    """The whole screen and single key presses while in use; restored after.

    ``lock`` is held while drawing and reading keys: another thread that
    asks a question on the terminal holds it too, inside ``suspended``.
    """

    def __init__(self, interactive: bool, lock: threading.RLock | None = None) -> None:
        self.interactive = interactive
        self.lock = lock if lock is not None else threading.RLock()
        self.keys_fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> Terminal:
        if self.interactive and sys.stdin.isatty():
            self.keys_fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.keys_fd)
        self._take()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._give_back()

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The terminal as it was before, for the time of this block."""
        with self.lock:
            self._give_back()
            try:
                yield
            finally:
                self._take()

    def _take(self) -> None:
        if not self.interactive:
            return
        if self.keys_fd is not None:
            tty.setcbreak(self.keys_fd)  # keys without Enter; Ctrl-C still works
        self._write("\x1b[?1049h\x1b[?25l")  # alternate screen, no cursor

    def _give_back(self) -> None:
        if not self.interactive:
            return
        self._write("\x1b[?25h\x1b[?1049l")
        if self.keys_fd is not None and self._saved is not None:
            termios.tcsetattr(self.keys_fd, termios.TCSADRAIN, self._saved)

    def size(self) -> tuple[int, int]:
        if not self.interactive:
            return 160, 0
        columns, lines = os.get_terminal_size(sys.stdout.fileno())
        return columns, lines

    def show(self, lines: list[str]) -> None:
        """Draw over the previous screen, clearing what it left."""
        with self.lock:
            self._write("\x1b[H" + "\x1b[K\n".join(lines) + "\x1b[K\x1b[J")

    def keys(self) -> str:
        """The keys typed; "" if a question asked meanwhile took them."""
        if self.keys_fd is None:
            return ""
        with self.lock:
            if not select.select([self.keys_fd], [], [], 0)[0]:
                return ""
            return os.read(self.keys_fd, 64).decode(errors="replace")

    @staticmethod
    def _write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


class TopLoop:
    """Draws once a second and reads keys; with a stream, also reads it (one
    daemon). ``FleetLoop`` (cli.topfleet) draws several hosts instead."""

    def __init__(
        self,
        settings: Settings,
        stream: zmq.Socket[Any] | None,
        endpoint: str,
        terminal: Terminal,
        sort: str,
        reverse: bool,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.endpoint = endpoint
        self.terminal = terminal
        self.sort = sort
        self.reverse = reverse
        self.view = TopView()
        self.statuses: dict[str, str] = {}

    def run(self, iterations: int | None) -> None:
        poller = zmq.Poller()
        if self.stream is not None:
            poller.register(self.stream, zmq.POLLIN)
        if self.terminal.keys_fd is not None:
            poller.register(self.terminal.keys_fd, zmq.POLLIN)
        next_paint = time.monotonic() + PERIOD
        painted = 0
        while True:
            wait = max(0.0, next_paint - time.monotonic())
            events = dict(poller.poll(int(wait * 1000)))
            if self.stream is not None and self.stream in events:
                first = self.view.last_message is None
                receive(self.stream, self.view)
                if first and self.view.last_message is not None:
                    # Show the first data soon, once the rest of its second
                    # (sent as it is sampled, watcher by watcher) is in.
                    next_paint = time.monotonic() + FIRST_DATA_WAIT
            if self.terminal.keys_fd in events:
                if not self._keys(self.terminal.keys()):
                    return
                self._paint(ask_status=False)
            if time.monotonic() >= next_paint:
                self._paint(ask_status=True)
                painted += 1
                if iterations is not None and painted >= iterations:
                    return
                next_paint = max(next_paint + PERIOD, time.monotonic())

    def _keys(self, typed: str) -> bool:
        """Apply key presses; False to quit."""
        for key in typed.lower():
            if key == "q":
                return False
            if key == "r":
                self.reverse = not self.reverse
            elif key in SORT_KEYS:
                self.sort = SORT_KEYS[key]
        return True

    def _paint(self, ask_status: bool) -> None:
        now = time.monotonic()
        self._refresh(ask_status, now)
        if self.settings.as_json:
            data = {"time": time.time(), **self._data()}
            self.settings.echo(json.dumps(data))
            return
        width, height = self.terminal.size()
        title = f"circusctl top - {self.endpoint} - {time.strftime('%H:%M:%S')}"
        lines = self._lines(title, width, height, now)
        if self.terminal.interactive:
            self.terminal.show(lines)
        else:
            self.settings.echo("\n".join([*lines, ""]))

    def _refresh(self, ask_status: bool, now: float) -> None:
        if ask_status:
            self.statuses = ask_statuses(self.settings)
        self.view.expire(now)

    def _data(self) -> dict[str, Any]:
        return self.view.data(self.statuses)

    def _lines(self, title: str, width: int, height: int, now: float) -> list[str]:
        lines = self.view.frame(
            self.statuses, self.sort, self.reverse, width, height, title
        )
        notice = stream_notice(self.view, self.endpoint, now)
        if notice:
            lines.insert(1, notice[:width])
        return lines


def receive(stream: zmq.Socket[Any], view: TopView) -> None:
    """Fold every message waiting on ``stream`` into ``view``."""
    now = time.monotonic()
    while True:
        try:
            frames = stream.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return
        if len(frames) != 2:
            continue
        try:
            data = json.loads(frames[1])
        except ValueError:
            continue
        if isinstance(data, dict):
            view.add(frames[0].decode(errors="replace"), data, now)


def stream_notice(view: TopView, endpoint: str, now: float) -> str:
    """Why the screen may be empty or old, or ""."""
    last = view.last_message
    if last is None:
        return f"waiting for statistics from {endpoint}"
    if now - last > STALE_AFTER:
        return f"no statistics for {now - last:.0f}s"
    return ""


def ask_statuses(settings: Settings) -> dict[str, str]:
    """The watchers' states; {} if the daemon does not let us ask."""
    try:
        reply = settings.client().call("status")
    except ReplyError:
        return {}  # not allowed to ask: the stream alone is shown
    except CallError as exc:
        raise Failure(settings.explain(exc)) from None
    statuses = reply.get("statuses")
    if not isinstance(statuses, dict):
        return {}
    return {str(name): str(state) for name, state in statuses.items()}


class StatsUnavailable(Failure):
    """The daemon has no stats stream that can be read from here."""


def stats_endpoint(settings: Settings) -> str:
    reply = call(settings, "globaloptions")
    endpoint = (reply.get("options") or {}).get("stats_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise StatsUnavailable(
            "the daemon publishes no statistics: set statsd = true (or "
            "stats_endpoint) in its [circus] section"
        )
    problem = remote.remote_endpoint_problem(endpoint) if settings.session else None
    if problem:
        raise StatsUnavailable(f"stats stream: {problem}")
    return endpoint


@click.command()
@option(
    "--sort",
    type=click.Choice(SORTS),
    default="cpu",
    show_default=True,
    help="Order of watchers and processes: cpu, mem (resident memory), age "
    "(oldest first) or pid. Keys change it while running: c, m, a, p; r "
    "reverses it; q quits.",
)
@option("--reverse", is_flag=True, help="Reverse the order.")
@option(
    "--iterations",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N screens (one a second) instead of running until q or Ctrl-C.",
)
@click.pass_obj
def top(settings: Settings, sort: str, reverse: bool, iterations: int | None) -> None:
    """Show watchers and processes live: CPU, memory and age.

    Reads the daemon's stats stream (its stats_endpoint: statsd must be on)
    and redraws once a second: one line per watcher (status, summed CPU %
    and memory, oldest age) and one per process. On a terminal it fills the
    screen; otherwise it prints one frame per second, or with --json one
    JSON object per line. Works over --ssh; with several hosts (--ssh more
    than once, or --ssh-hosts) one screen shows a section per host, and a
    host that fails shows its error there while the others go on; with
    --json each line is then {"time": ..., "hosts": {HOST: ...}}. The exit
    code is 1 (or the code the failed hosts share) if a host had failed.
    """
    if settings.fleet is not None:
        from circusd.cli.topfleet import top_fleet

        ctx = click.get_current_context()
        ctx.exit(top_fleet(settings, *settings.fleet, sort, reverse, iterations))
    endpoint = stats_endpoint(settings)
    stream = open_stream(settings, endpoint, settings.context or zmq.Context.instance())
    try:
        interactive = sys.stdout.isatty() and not settings.as_json
        with Terminal(interactive) as terminal:
            loop = TopLoop(settings, stream, endpoint, terminal, sort, reverse)
            loop.run(iterations)
    except KeyboardInterrupt:
        return
    finally:
        stream.close(linger=0)


def open_stream(
    settings: Settings, endpoint: str, context: zmq.Context[Any]
) -> zmq.Socket[Any]:
    """A subscriber to the stats stream at ``endpoint``."""
    try:
        stream = settings.connect(
            context, zmq.SUB, parse_endpoint(endpoint), settings.timeout
        )
    except InvalidEndpoint as exc:
        raise Failure(f"stats stream: {exc}") from None
    except CallError as exc:
        raise Failure(f"stats stream: {settings.explain(exc)}") from None
    stream.setsockopt(zmq.SUBSCRIBE, b"stat.")
    return stream
