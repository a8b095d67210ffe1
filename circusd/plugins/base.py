"""The base class of a plugin: what a plugin overrides and what it may use.

A plugin is a class with a few handlers, run in its own process by
``python -m circusd.plugins`` (see ``circusd.plugins.runner``) on one asyncio
event loop. It talks to circusd like any client: requests on the control
endpoint (``call``, ``cast``) and the ``watcher.`` events of the event
stream (``handle_recv``). Periodic work runs on timers (``every``,
``call_later``), never in a loop that sleeps.

Options arrive as text. A plugin that declares ``options`` (a table of
``circusd.config.options.Option``) gets them converted and checked in
``self.config``; a wrong or unknown key is a configuration error that stops
the plugin for good, with the reason in ``circusctl status``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from circusd.config.options import Option, closest
from circusd.config.plugin_options import PROCESS_OPTIONS
from circusd.errors import CircusdError, ValueProblem

if TYPE_CHECKING:
    from circusd.plugins.link import Link

SETTINGS_FORMAT = 1
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
Callback = Callable[[], Awaitable[Any] | None]


class PluginError(CircusdError):
    """A plugin cannot run. ``permanent``: trying again cannot help (a bad
    option, a class that cannot be imported), so circusd does not retry."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Settings:
    """What circusd gives a plugin process on its stdin, as one JSON object."""

    name: str  # the section's NAME
    use: str
    endpoint: str
    pubsub_endpoint: str
    options: Mapping[str, str] = field(default_factory=dict)
    check_delay: float = 5.0
    loglevel: str = "info"
    timeout: float = 10.0  # for each call

    def to_json(self) -> bytes:
        document = {"format": SETTINGS_FORMAT, **self.__dict__}
        document["options"] = dict(self.options)
        return json.dumps(document).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Settings:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise PluginError(f"settings are not JSON: {exc}", permanent=True) from None
        if not isinstance(document, dict) or document.get("format") != SETTINGS_FORMAT:
            raise PluginError(
                f"settings must be a JSON object with format {SETTINGS_FORMAT}",
                permanent=True,
            )
        document.pop("format")
        try:
            settings = cls(**document)
        except TypeError as exc:
            raise PluginError(f"invalid settings: {exc}", permanent=True) from None
        problem = _problem(settings)
        if problem is not None:
            raise PluginError(f"invalid settings: {problem}", permanent=True)
        return settings


def _problem(settings: Settings) -> str | None:
    texts = {
        "name": settings.name,
        "use": settings.use,
        "endpoint": settings.endpoint,
        "pubsub_endpoint": settings.pubsub_endpoint,
    }
    for key, value in texts.items():
        if not isinstance(value, str) or not value:
            return f"{key} must be a non-empty string"
    options = settings.options
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        return "options must be an object of strings"
    level = settings.loglevel
    if not isinstance(level, str) or level.upper() not in _LEVELS:
        return f"loglevel must be one of {', '.join(_LEVELS).lower()}"
    for key, number in (
        ("check_delay", settings.check_delay),
        ("timeout", settings.timeout),
    ):
        if (
            not isinstance(number, (int, float))
            or isinstance(number, bool)
            or number <= 0
        ):
            return f"{key} must be a number above 0"
    return None


def read_options(
    table: Mapping[str, Option] | None, given: Mapping[str, str]
) -> dict[str, Any]:
    """``given`` converted through ``table``, defaults filled in; the keys of
    the plugin's process (priority, uid, ...) are left out. Without a table,
    every key is kept as text."""
    options = {k: v for k, v in given.items() if k not in PROCESS_OPTIONS}
    if table is None:
        return options
    config: dict[str, Any] = {name: option.default for name, option in table.items()}
    for key, text in options.items():
        option = table.get(key)
        if option is None:
            raise PluginError(
                f"unknown option {key!r}{closest(key, table)}", permanent=True
            )
        try:
            config[key] = option.convert(text)
        except ValueProblem as exc:
            raise PluginError(f"option {key}: {exc}", permanent=True) from None
    return config


class Plugin:
    """Subclass it, override the ``handle_*`` methods, name it in ``use``.

    Handlers may be plain functions or coroutines. Events reach
    ``handle_recv`` one at a time, in order: a handler that awaits a ``call``
    holds back the next event, never the timers.
    """

    options: ClassVar[Mapping[str, Option] | None] = None  # None: any key, as text

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = read_options(type(self).options, settings.options)
        self.log = logging.getLogger(f"circusd.plugin.{settings.name}")
        self._link: Link | None = None
        self._timers: list[Repeat | asyncio.TimerHandle] = []
        self._stopping: asyncio.Event | None = None

    # -- to override ---------------------------------------------------------------

    def handle_init(self) -> Awaitable[None] | None:
        """Called once, connected, before the first event. An exception
        here is retried by circusd's restart policy (with backoff)."""
        return None

    def handle_recv(self, topic: str, event: dict[str, Any]) -> Awaitable[None] | None:
        """Called for each ``watcher.NAME.EVENT`` message, with its data."""
        return None

    def handle_stop(self) -> Awaitable[None] | None:
        """Called once when the plugin stops; timers are already cancelled."""
        return None

    # -- talking to circusd --------------------------------------------------------

    @property
    def link(self) -> Link:
        if self._link is None:
            raise RuntimeError("the plugin is not connected yet (use handle_init)")
        return self._link

    async def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send a command and return circusd's reply. Raises
        ``circusd.client.ReplyError`` for an error reply, ``CallTimeout``
        when no reply comes within the settings' timeout."""
        return await self.link.call(command, **properties)

    def cast(self, command: str, **properties: Any) -> None:
        """Send a command without waiting for (or getting) a reply."""
        self.link.cast(command, **properties)

    def stop(self) -> None:
        """End the plugin (exit status 0: circusd starts it again)."""
        if self._stopping is not None:
            self._stopping.set()

    # -- timers --------------------------------------------------------------------

    def every(self, seconds: float, callback: Callback) -> Repeat:
        """Call ``callback`` every ``seconds``, the first time after
        ``seconds``; cancelled when the plugin stops."""
        timer = Repeat(seconds, callback, self.log)
        self._timers.append(timer)
        return timer

    def call_later(self, seconds: float, callback: Callback) -> asyncio.TimerHandle:
        def fire() -> None:
            _run_callback(callback, self.log)

        handle = asyncio.get_running_loop().call_later(seconds, fire)
        self._timers.append(handle)
        return handle

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # -- used by the runner --------------------------------------------------------

    def attach(self, link: Link, stopping: asyncio.Event) -> None:
        self._link = link
        self._stopping = stopping


def split_topic(topic: str) -> tuple[str, str]:
    """``watcher.NAME.EVENT`` as (NAME, EVENT)."""
    _, _, rest = topic.partition(".")
    name, _, event = rest.rpartition(".")
    return name, event


class Repeat:
    """A callback on a fixed schedule: ticks do not drift, ticks missed
    while the loop was busy are dropped, and a tick is skipped while the
    previous call (a coroutine) is still running."""

    def __init__(
        self, interval: float, callback: Callback, log: logging.Logger
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self.interval = interval
        self._callback = callback
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.time() + interval
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._next, self._tick
        )
        self._running: asyncio.Future[Any] | None = None

    def _tick(self) -> None:
        now = self._loop.time()
        self._next += self.interval
        if self._next <= now:
            missed = int((now - self._next) // self.interval) + 1
            self._next += missed * self.interval
        self._handle = self._loop.call_at(self._next, self._tick)
        if self._running is not None and not self._running.done():
            self._log.debug("tick skipped: the previous one is still running")
            return
        self._running = _run_callback(self._callback, self._log)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._running is not None:
            self._running.cancel()


def _run_callback(
    callback: Callback, log: logging.Logger
) -> asyncio.Future[Any] | None:
    """Run a timer's callback; its exceptions are logged, never raised."""
    try:
        result = callback()
    except Exception:
        log.exception("timer callback failed")
        return None
    if not inspect.isawaitable(result):
        return None
    future = asyncio.ensure_future(result)

    def done(finished: asyncio.Future[Any]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            error = finished.exception()
            log.error("timer callback failed: %s", error, exc_info=error)

    future.add_done_callback(done)
    return future
