"""``circusctl top`` on several hosts: one screen, a section per host.

Each host has a thread of its own (``HostFeed``) that opens its SSH session,
asks for the stats endpoint, reads the stream and asks ``status`` once a
second; the display thread only reads what the feeds hold. A host that
fails shows its error in its section and the others go on. A host whose
connection fails or drops (SSH unreachable, the daemon down or silent) is
tried again, 1 s after the failure, then after twice as long each time up to
5 s, over the same SSH connection while that is up; it comes back on its own
when its daemon does. A failure that trying again would not mend (host
key, login, no statistics, a refusal) is final. At the end every session and
socket is closed as ``remote.fan_out`` does.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
import zmq

from circusd.cli import remote
from circusd.cli.circusctl import (
    EXIT_FAILURE,
    EXIT_USAGE,
    Failure,
    Settings,
    for_host,
    guarded,
)
from circusd.cli.top import (
    PERIOD,
    StatsUnavailable,
    Terminal,
    TopLoop,
    ask_statuses,
    open_stream,
    receive,
    stats_endpoint,
    stream_notice,
)
from circusd.cli.topview import TopView, fleet_frame
from circusd.client import CallError
from circusd.client.ssh import InvalidTarget, SSHUnreachable

if TYPE_CHECKING:
    from circusd.client.ssh import SSHOptions, SSHSession

RETRY_FIRST = 1.0  # seconds from a failure to the next attempt
RETRY_MAX = 5.0  # the wait doubles after each failed attempt, up to this


class HostFeed(threading.Thread):
    """One host's stream and watcher states, kept up to date in a thread."""

    def __init__(
        self,
        host: remote.Host,
        settings: Settings,
        options: SSHOptions,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"top {host.label}", daemon=True)
        self.host = host
        self.label = host.label
        self.settings = settings  # the fleet's; each attempt gets its own
        self.options = options
        self.session: SSHSession | None = None
        self.endpoint = ""  # the stats endpoint, once followed
        self.view = TopView()
        self.statuses: dict[str, str] = {}
        self.problem: str | None = None  # why this host shows nothing
        self.retry_at: float | None = None  # while waiting to try again
        self.final = False  # the problem is for good
        self.code = 0  # while there is a problem: its exit code
        self.lock = threading.Lock()
        self._stopping = stop
        self._retry = False  # whether the failure of this attempt may pass

    def run(self) -> None:
        wait = RETRY_FIRST
        while not self._stopping.is_set():
            if self._attempt():
                wait = RETRY_FIRST  # it was followed for a while: start over
            if self._stopping.is_set() or self.final:
                break
            with self.lock:
                self.retry_at = time.monotonic() + wait
            self._stopping.wait(wait)
            with self.lock:
                self.retry_at = None
            wait = min(wait * 2, RETRY_MAX)
        self.close()

    def close(self) -> None:
        with self.lock:
            session = self.session
        if session is not None:
            session.close()

    def _attempt(self) -> bool:
        """Connect, then follow until stopped or failed; whether the host was
        followed (its stream open) before it failed."""
        from circusd.client.ssh import SSHSession

        with self.lock:  # see close(): a new session only before stop
            if self._stopping.is_set():
                return False
            if self.session is None or not self.session.alive():
                if self.session is not None:
                    self.session.close()
                self.session = SSHSession(self.host.target, self.options)
            session = self.session
        context = self.settings.context
        assert context is not None
        output = remote.Output()  # unused: failures go to the host's section
        settings = for_host(self.settings, self.host, session, context, output)
        self.endpoint = ""
        code = guarded(
            lambda: self._follow(replace(settings, as_json=False)), self._fail
        )
        if not self._stopping.is_set() and code:
            with self.lock:
                self.code = code
                self.final = not (self._retry and code == EXIT_FAILURE)
        return bool(self.endpoint)

    def _fail(self, message: str) -> None:
        if not self._stopping.is_set():  # else: an effect of closing
            with self.lock:
                self.problem = message.removeprefix("circusctl: error: ")

    def _follow(self, settings: Settings) -> None:
        self._retry = False
        assert settings.session is not None
        try:
            settings.session.open()
        except InvalidTarget as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        except SSHUnreachable as exc:
            self._retry = True
            raise Failure(str(exc)) from None
        except CallError as exc:  # host key, login: trying again is no use
            raise Failure(str(exc)) from None
        self._retry = True
        # settings.client() ties its socket's closing to a click context.
        with click.Context(click.Command("top"), obj=settings):
            try:
                endpoint = stats_endpoint(settings)
            except StatsUnavailable:
                self._retry = False
                raise
            assert settings.context is not None
            stream = open_stream(settings, endpoint, settings.context)
            with self.lock:
                self.endpoint = endpoint
                self.view = TopView()
                self.problem = None
                self.code = 0
            try:
                self._read(settings, stream)
            finally:
                stream.close(linger=0)
        # The sockets are closed by now; the session after them.

    def _read(self, settings: Settings, stream: zmq.Socket[Any]) -> None:
        """The stream as it comes, and ``status`` once a second, until stopped."""
        assert settings.session is not None
        next_status = time.monotonic()
        while not self._stopping.is_set():
            wait = max(0.0, next_status - time.monotonic())
            if stream.poll(int(wait * 1000)):
                with self.lock:
                    receive(stream, self.view)
            if settings.session.tunnel_ended(stream):
                raise Failure(
                    f"{settings.session.label}: the daemon closed the stats "
                    f"stream {self.endpoint}"
                )
            if time.monotonic() >= next_status:
                statuses = ask_statuses(settings)
                with self.lock:
                    self.statuses = statuses
                next_status = max(next_status + PERIOD, time.monotonic())

    def data(self) -> dict[str, Any]:
        with self.lock:
            if self.problem is not None:
                return {"error": self.problem, **self._retrying(time.monotonic())}
            if not self.endpoint:
                return {"notice": "connecting"}
            return self.view.data(self.statuses)

    def lines(self, sort: str, reverse: bool, now: float) -> list[str]:
        with self.lock:
            if self.problem is not None:
                retrying = self._retrying(now)
                if "retry_in" in retrying:
                    seconds = math.ceil(retrying["retry_in"])
                    return [f"error: {self.problem}", f"retrying in {seconds}s"]
                if retrying:
                    return [f"error: {self.problem}", "reconnecting"]
                return [f"error: {self.problem}"]
            self.view.expire(now)
            if not self.endpoint:
                return ["connecting"]
            notice = stream_notice(self.view, self.endpoint, now)
            table = self.view.table(self.statuses, sort, reverse)
            return [notice, *table] if notice else table

    def _retrying(self, now: float) -> dict[str, Any]:
        """What is done about the problem: {} if nothing (it is final)."""
        if self.final:
            return {}
        if self.retry_at is not None:
            return {"retry_in": round(max(0.0, self.retry_at - now), 1)}
        return {"notice": "reconnecting"}


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
    context: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    fleet_settings = replace(settings, context=context)
    feeds = [HostFeed(host, fleet_settings, options, stop) for host in hosts]
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
        sessions = []
        for feed in feeds:
            with feed.lock:
                if feed.session is not None:
                    sessions.append(feed.session)
        remote.stop(sessions, context, feeds)
    return remote.summary(hosts, codes)
