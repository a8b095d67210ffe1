"""``circusctl top`` on several hosts: one screen, a section per host.

Each host has a thread of its own (``HostFeed``) that opens its SSH session,
asks for the stats endpoint, reads the stream and asks ``status`` once a
second; the display thread only reads what the feeds hold. A host that
fails shows its error in its section and the others go on. At the end every
session and socket is closed as ``remote.fan_out`` does.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
import zmq

from circusd.cli import remote
from circusd.cli.circusctl import Settings, for_host, guarded
from circusd.cli.top import (
    PERIOD,
    Terminal,
    TopLoop,
    ask_statuses,
    open_stream,
    receive,
    stats_endpoint,
    stream_notice,
)
from circusd.cli.topview import TopView, fleet_frame

if TYPE_CHECKING:
    from circusd.client.ssh import SSHOptions, SSHSession


class HostFeed(threading.Thread):
    """One host's stream and watcher states, kept up to date in a thread."""

    def __init__(self, host: remote.Host, settings: Settings, stop: threading.Event):
        super().__init__(name=f"top {host.label}", daemon=True)
        self.label = host.label
        self.settings = settings
        self.endpoint = ""  # the stats endpoint, once known
        self.view = TopView()
        self.statuses: dict[str, str] = {}
        self.problem: str | None = None  # why this host shows nothing
        self.code = 0
        self.lock = threading.Lock()
        self._stopping = stop

    def run(self) -> None:
        code = guarded(self._follow, self._fail)
        if not self._stopping.is_set():
            self.code = code
        self._close_session()  # a failed host lets go of its connection at once

    def _fail(self, message: str) -> None:
        if not self._stopping.is_set():  # else: an effect of closing
            self.problem = message.removeprefix("circusctl: error: ")

    def _follow(self) -> None:
        # settings.client() ties its socket's closing to a click context.
        with click.Context(click.Command("top"), obj=self.settings):
            endpoint = stats_endpoint(self.settings)
            assert self.settings.context is not None
            stream = open_stream(self.settings, endpoint, self.settings.context)
            self.endpoint = endpoint
            try:
                self._read(stream)
            finally:
                stream.close(linger=0)
        # The sockets are closed by now; run() closes the tunnels and the
        # connection after them.

    def _close_session(self) -> None:
        if self.settings.session is not None:
            self.settings.session.close()

    def _read(self, stream: zmq.Socket[Any]) -> None:
        """The stream as it comes, and ``status`` once a second, until stopped."""
        next_status = time.monotonic()
        while not self._stopping.is_set():
            wait = max(0.0, next_status - time.monotonic())
            if stream.poll(int(wait * 1000)):
                with self.lock:
                    receive(stream, self.view)
            if time.monotonic() >= next_status:
                statuses = ask_statuses(self.settings)
                with self.lock:
                    self.statuses = statuses
                next_status = max(next_status + PERIOD, time.monotonic())

    def data(self) -> dict[str, Any]:
        with self.lock:
            if self.problem is not None:
                return {"error": self.problem}
            if not self.endpoint:
                return {"notice": "connecting"}
            return self.view.data(self.statuses)

    def lines(self, sort: str, reverse: bool, now: float) -> list[str]:
        with self.lock:
            if self.problem is not None:
                return [f"error: {self.problem}"]
            self.view.expire(now)
            if not self.endpoint:
                return ["connecting"]
            notice = stream_notice(self.view, self.endpoint, now)
            table = self.view.table(self.statuses, sort, reverse)
            return [notice, *table] if notice else table


class FleetLoop(TopLoop):
    """The display loop of ``TopLoop``, drawing every host's feed."""

    def __init__(
        self,
        settings: Settings,
        feeds: Sequence[HostFeed],
        terminal: Terminal,
        sort: str,
        reverse: bool,
    ) -> None:
        where = f"{len(feeds)} hosts"
        super().__init__(settings, None, where, terminal, sort, reverse)
        self.feeds = feeds

    def _paint(self, ask_status: bool) -> None:
        with self.terminal.lock:  # not in the middle of a question
            super()._paint(ask_status)

    def _refresh(self, ask_status: bool, now: float) -> None:
        pass  # the feeds ask for themselves

    def _data(self) -> dict[str, Any]:
        return {"hosts": {feed.label: feed.data() for feed in self.feeds}}

    def _lines(self, title: str, width: int, height: int, now: float) -> list[str]:
        sections = [
            (feed.label, feed.lines(self.sort, self.reverse, now))
            for feed in self.feeds
        ]
        return fleet_frame(sections, self.sort, self.reverse, width, height, title)


def top_fleet(
    settings: Settings,
    hosts: Sequence[remote.Host],
    options: SSHOptions,
    sort: str,
    reverse: bool,
    iterations: int | None,
) -> int:
    """Run the live view of every host; 0 if no host failed, else as
    ``remote.fan_out`` says (the failed hosts are named on stderr)."""
    from circusd.client.ssh import SSHSession

    context: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    sessions: list[SSHSession] = []
    feeds: list[HostFeed] = []
    for host in hosts:
        sessions.append(SSHSession(host.target, options))
        host_settings = for_host(settings, host, sessions[-1], context, remote.Output())
        # A failure is kept for the host's section, not printed as a reply.
        feeds.append(HostFeed(host, replace(host_settings, as_json=False), stop))
    try:
        for feed in feeds:
            feed.start()
        interactive = sys.stdout.isatty() and not settings.as_json
        questions = remote.TERMINAL  # a host may ask for a password meanwhile
        with (
            Terminal(interactive, questions.lock) as terminal,
            questions.sharing(terminal.suspended),
        ):
            FleetLoop(settings, feeds, terminal, sort, reverse).run(iterations)
    except KeyboardInterrupt:
        pass
    finally:
        codes = [feed.code for feed in feeds]
        stop.set()
        remote.stop(sessions, context, feeds)
    return remote.summary(hosts, codes)
