"""The console's view of circusd, kept current by events.

One task reads the event stream and one the statistics stream. An event
about a watcher asks for a refresh of that watcher (``status``, ``stats``
and ``get`` over the control endpoint); events that arrive close together
share one refresh. Nothing is polled: without events nothing is asked,
except to retry while circusd cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import pwd
from collections.abc import Callable, Coroutine
from typing import Any

from circusd.client import CallError, InvalidEndpoint, ReplyError, parse_endpoint
from circusd.client.events import Event
from circusd.config import checks
from circusd.web.hub import Changed, Hub, Problem, Stat
from circusd.web.link import RETRY_FIRST, RETRY_LONGEST, DaemonLink, Feed
from circusd.web.model import Model, no_uid, topic_name
from circusd.web.settings import Settings

log = logging.getLogger(__name__)

COALESCE = 0.02  # events this close together share one refresh
# At most two refreshes a second: each costs circusd a process sample, and
# a crash-looping watcher sends events as fast as it dies.
MIN_INTERVAL = 0.5
_WHOLE = frozenset({"add", "remove"})


class Console:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.link = DaemonLink(settings.endpoint, settings.timeout)
        self.model = Model(uid_of=local_uid if is_local(settings.endpoint) else no_uid)
        self.hub = Hub()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wanted: set[str] | None = set()  # None: every watcher
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._retry = RETRY_FIRST
        self._stats: Feed | None = None
        self._subscribed = False  # to the event stream
        self._refreshed_once = False  # everything, since subscribing

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start following circusd; pages are served meanwhile (and say so
        while circusd cannot be reached)."""
        self._spawn(self._refresher())
        self._spawn(self._connect())

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        task.add_done_callback(_report_failure)
        task.add_done_callback(self._tasks.discard)
        self._tasks.add(task)

    async def stop(self) -> None:
        self.hub.close_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.link.close()

    async def _connect(self) -> None:
        pubsub, stats = self.settings.pubsub_endpoint, self.settings.stats_endpoint
        if pubsub is None or stats is None:
            options = await self._global_options()
            pubsub = pubsub or options.get("pubsub_endpoint")
            stats = stats or options.get("stats_endpoint") or None
        if not isinstance(pubsub, str):
            self._unreachable(CallError("circusd did not name its event stream"))
            return
        self.model.stats_stream = stats
        self._spawn(self._follow(Feed(pubsub, {"watcher."}), self._on_event))
        if stats:
            self._stats = Feed(stats, self._stat_topics())
            self._spawn(self._follow(self._stats, self._on_stat))
        else:
            log.warning("no statistics stream: circusd has no stats_endpoint; "
                        "charts stay empty")  # fmt: skip

    async def _global_options(self) -> dict[str, Any]:
        delay = RETRY_FIRST
        while True:
            try:
                return dict((await self.link.call("globaloptions"))["options"])
            except CallError as exc:
                self._unreachable(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_LONGEST)

    async def _follow(self, feed: Feed, handle: Callable[[Event], None]) -> None:
        # Messages sent before the subscription reached circusd are lost:
        # refresh everything once it is in place.
        async for event in feed.messages(lambda: self._on_subscribed(feed)):
            try:
                handle(event)
            except Exception:
                log.exception("bad message topic=%s", event.topic)

    def _on_subscribed(self, feed: Feed) -> None:
        if "watcher." in feed.topics:
            self._subscribed = True
        self.request()

    # -- events in -----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        view = self.model.find(event.watcher or "")
        if view is None or event.event in _WHOLE:
            self.request()
        else:
            self.request({view.name})

    def _on_stat(self, event: Event) -> None:
        sample = self.model.apply_stat(event.topic, event.data)
        if sample is not None:
            payload = json.dumps(sample.as_json())
            self.hub.publish(Stat(sample.watcher, sample.pid, payload))

    # -- refreshing ----------------------------------------------------------------

    def request(self, names: set[str] | None = None) -> asyncio.Future[None]:
        """Ask for a refresh of ``names`` (every watcher when None); the future
        is done once a refresh that covers them has finished."""
        if names is None or self._wanted is None:
            self._wanted = None
        else:
            self._wanted |= names
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    async def refresh(self) -> None:
        """Bring everything up to date now (a page is being loaded)."""
        await self.request()

    @property
    def current(self) -> bool:
        """Whether events keep the model up to date: circusd answered the
        last refresh and the event stream is subscribed."""
        return self._refreshed_once and self.model.problem is None

    async def _refresher(self) -> None:
        loop = asyncio.get_running_loop()
        last = -MIN_INTERVAL
        while True:
            await self._wake.wait()
            await asyncio.sleep(max(COALESCE, last + MIN_INTERVAL - loop.time()))
            last = loop.time()
            self._wake.clear()
            wanted, self._wanted = self._wanted, set()
            waiters, self._waiters = self._waiters, []
            try:
                await self._refresh(wanted)
            except CallError as exc:
                self._unreachable(exc)
                self._spawn(self._retry_later())
            else:
                self._reachable()
                self._refreshed_once |= wanted is None and self._subscribed
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if self._stats is not None:
                self._stats.subscribe(self._stat_topics())
            self.hub.publish(Changed(None if wanted is None else frozenset(wanted)))

    def _stat_topics(self) -> set[str]:
        """``stat.<watcher>`` for each watcher shown (the prefix covers its
        processes' ``stat.<watcher>.<pid>``)."""
        return {"stat." + topic_name(name) for name in self.model.watchers}

    async def _retry_later(self) -> None:
        await asyncio.sleep(self._retry)
        self._retry = min(self._retry * 2, RETRY_LONGEST)
        self.request()

    def _unreachable(self, exc: CallError) -> None:
        text = str(exc)
        if self.model.problem != text:
            log.warning("circusd not usable: %s", text)
            self.model.problem = text
            self.hub.publish(Problem(text))

    def _reachable(self) -> None:
        self._retry = RETRY_FIRST
        if self.model.problem is not None:
            log.info("circusd answers again")
            self.model.problem = None
            self.hub.publish(Problem(None))

    async def _refresh(self, names: set[str] | None) -> None:
        if names is None:
            await self._refresh_all()
            return
        for name in names:
            try:
                await self._refresh_one(name)
            except ReplyError as exc:
                if "not found" not in exc.reason:
                    raise
                self.model.remove(name)

    async def _refresh_all(self) -> None:
        status = await self.link.call("status")
        stats = await self.link.call("stats")
        statuses = status.get("statuses", {})
        targets = {}
        for name in statuses:
            targets[name] = await self._target(name)
        self.model.replace_all(
            statuses, status.get("reasons", {}), stats.get("infos", {}), targets
        )

    async def _refresh_one(self, name: str) -> None:
        status = await self.link.call("status", name=name)
        stats = await self.link.call("stats", name=name)
        self.model.replace_one(
            name,
            str(status.get("status")),
            status.get("reason"),
            stats.get("info", {}),
            await self._target(name),
        )

    async def _target(self, name: str) -> int | None:
        try:
            reply = await self.link.call("get", name=name, keys=["numprocesses"])
        except ReplyError:
            return None
        value = reply.get("options", {}).get("numprocesses")
        return value if isinstance(value, int) else None

    # -- actions -------------------------------------------------------------------

    async def act(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send an action; raises ReplyError with circusd's reason if refused."""
        reply = await self.link.call(command, **properties)
        name = properties.get("name")
        self.request({name} if isinstance(name, str) else None)
        return reply


def is_local(endpoint: str) -> bool:
    """Whether circusd runs on this host, so that its user names mean what
    they mean here."""
    try:
        parsed = parse_endpoint(endpoint)
    except InvalidEndpoint:
        return False
    return parsed.scheme == "ipc" or checks.is_loopback(parsed.host)


@functools.lru_cache(maxsize=256)
def local_uid(name: str) -> int | None:
    """The number of a user name; circusd reports a user without a name by
    its number already."""
    if name.isdecimal():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _report_failure(task: asyncio.Task[Any]) -> None:
    """A background task that ends by an error leaves a part of the console
    dead: say so loudly instead of dropping the exception."""
    if not task.cancelled() and task.exception() is not None:
        log.error("console task failed: %s", task.get_name(), exc_info=task.exception())
