"""The arbiter: owns every watcher and socket, and applies configs."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from circusd.config.diff import Changes, diff
from circusd.config.interpolate import referenced_sockets
from circusd.config.loader import load
from circusd.config.model import Config, SocketConfig, WatcherConfig
from circusd.control.subscribers import SubscriberGate
from circusd.errors import CommandError, ConfigError, Errno, NotFound, ValueProblem
from circusd.plugin_watchers import PluginWatcher, add_plugins, reload_plugins
from circusd.pubsub import Publisher
from circusd.reaper import Reaper
from circusd.sockets import CircusSocket
from circusd.watcher import State, Watcher

log = logging.getLogger(__name__)


class Arbiter:
    def __init__(self, config: Config, context: zmq.Context[Any]) -> None:
        self.config = config
        self.context = context
        self.watchers: dict[str, Watcher] = {}  # keyed by lowercased name
        self.sockets: dict[str, CircusSocket] = {}
        self.reaper = Reaper(asyncio.get_running_loop())
        self.publisher: Publisher | None = None
        self.stopped = asyncio.Event()
        self.stopping = False
        self.reloading = asyncio.Lock()
        # Where plugins connect; the daemon sets it once the endpoint is bound.
        self.control_endpoint = config.circus.endpoint
        # Who may subscribe to the event stream, and how its socket file is
        # made; the daemon sets both before bind.
        self.event_gate: SubscriberGate | None = None
        self.bind_events: Callable[[zmq.Socket[Any], str], Any] = zmq.Socket.bind

    # -- lifecycle -------------------------------------------------------------

    def bind(self) -> None:
        """Bind sockets and the event stream; errors here stop the start."""
        self.publisher = Publisher(
            self.context,
            self.config.circus.pubsub_endpoint,
            self.event_gate,
            self.bind_events,
        )
        for sock in self.config.sockets:
            self._add_socket(sock)
        for config in self.config.watchers:
            try:
                self.watchers[config.name.lower()] = Watcher(config, self)
            except ValueProblem as exc:  # a stream class or file, at start
                path, _, line = config.source.rpartition(":")
                raise ConfigError(
                    exc.message,
                    key=exc.key,
                    path=path or None,
                    line=int(line) if line.isdigit() else None,
                    section=f"watcher:{config.name}",
                ) from None
        add_plugins(self, self.config.plugins)
        self.reaper.start()

    def _add_socket(self, config: SocketConfig) -> None:
        sock = CircusSocket(config)
        sock.bind()
        self.sockets[config.name] = sock

    async def start(self) -> None:
        first = True
        for watcher in self.by_priority(self.watchers.values(), reverse=True):
            if not watcher.config.autostart:
                continue
            if watcher.config.on_demand:
                watcher.start_on_demand()
                continue
            if not first and self.config.circus.warmup_delay:
                await asyncio.sleep(self.config.circus.warmup_delay)
            first = False
            await watcher.start()
        log.info(
            "started watchers=%d processes=%d", len(self.watchers), self.numprocesses()
        )

    async def stop(self) -> None:
        """Stop every watcher, lowest priority first, then release sockets."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        log.info("stopping all watchers")
        ordered = self.by_priority(self.watchers.values())
        # Plugins first: none may restart a watcher that is being stopped.
        for watcher in sorted(ordered, key=lambda w: not isinstance(w, PluginWatcher)):
            await watcher.close()
        for sock in self.sockets.values():
            sock.close()
        self.reaper.stop()
        self.stopped.set()

    # -- watchers --------------------------------------------------------------

    @staticmethod
    def by_priority(
        watchers: Iterable[Watcher], reverse: bool = False
    ) -> list[Watcher]:
        ordered = sorted(watchers, key=lambda w: w.name.lower())
        return sorted(ordered, key=lambda w: w.config.priority, reverse=reverse)

    def get(self, name: Any) -> Watcher:
        if not isinstance(name, str):
            raise CommandError("the property 'name' must be a string")
        watcher = self.watchers.get(name.lower())
        if watcher is None:
            raise NotFound(name)
        return watcher

    def match(self, pattern: str, how: str = "glob") -> list[Watcher]:
        pattern = pattern.lower()
        if how == "simple":
            found = [w for key, w in self.watchers.items() if key == pattern]
        elif how == "glob":
            found = [
                w
                for key, w in self.watchers.items()
                if fnmatch.fnmatchcase(key, pattern)
            ]
        elif how == "regex":
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise CommandError(f"invalid regex {pattern!r}: {exc}") from None
            found = [w for key, w in self.watchers.items() if regex.fullmatch(key)]
        else:
            raise CommandError(f"match must be simple, glob or regex, not {how!r}")
        if not found:
            raise NotFound(pattern)
        return found

    async def add_watcher(self, config: WatcherConfig, start: bool) -> Watcher:
        key = config.name.lower()
        if key in self.watchers:
            raise CommandError(
                f"watcher {config.name!r} already exists", Errno.COMMAND_ERROR
            )
        missing = referenced_sockets(config) - set(self.sockets)
        if missing:
            raise CommandError(f"unknown socket {sorted(missing)[0]!r}")
        watcher = Watcher(config, self)
        watcher.runtime_added = True
        self.watchers[key] = watcher
        watcher.publish("add")
        log.info("added watcher=%s", config.name)
        if start:
            await watcher.start()
        return watcher

    async def remove_watcher(self, watcher: Watcher, nostop: bool = False) -> None:
        self.watchers.pop(watcher.name.lower(), None)
        if nostop:
            watcher.processes.clear()  # forgotten, left running
            watcher.state = State.STOPPED
        await watcher.close()
        watcher.publish("remove")
        log.info("removed watcher=%s", watcher.name)

    # -- reload ----------------------------------------------------------------

    async def reload_config(self, new: Config | None = None) -> None:
        """Re-read the config file and apply only what changed in it.

        Watchers added at runtime with ``add`` are kept (Circus drops them),
        and a watcher whose section did not change keeps what ``set`` or
        ``incr`` did to it. Changes to the [circus] section other than timing
        need a restart of circusd; they are logged and otherwise ignored.
        """
        async with self.reloading:
            if new is None:
                assert self.config.path is not None
                new = load(self.config.path)
            changes = diff(self.config, new)
            if changes.circus_changed:
                log.warning(
                    "[circus] section changed; endpoint changes take "
                    "effect when circusd restarts"
                )
            self._reload_sockets(new, changes.sockets)
            configs = {w.name: w for w in new.watchers}
            for name in changes.watchers.removed:
                watcher = self.watchers.get(name.lower())
                if watcher is not None and not watcher.runtime_added:
                    await self.remove_watcher(watcher)
            self.config = new
            for name in changes.watchers.added:
                await self._reload_added(configs[name])
            for name in (*changes.watchers.changed, *changes.numprocesses):
                await self.watchers[name.lower()].apply_config(configs[name])
            touched = set(changes.sockets.changed)
            for watcher in self.watchers.values():
                uses = (
                    set(self.sockets)
                    if watcher.config.use_sockets
                    else referenced_sockets(watcher.config)
                )
                if touched & uses and watcher.is_running():
                    await watcher.restart()
            await reload_plugins(self, new, changes.plugins)
            log.info("reloaded config path=%s", new.path)

    async def _reload_added(self, config: WatcherConfig) -> None:
        existing = self.watchers.get(config.name.lower())
        if existing is not None:  # was added at runtime; the file now owns it
            existing.runtime_added = False
            await existing.apply_config(config)
            return
        watcher = Watcher(config, self)
        self.watchers[config.name.lower()] = watcher
        watcher.publish("add")
        if config.autostart:
            await watcher.start()

    def _reload_sockets(self, new: Config, changes: Changes) -> None:
        configs = {s.name: s for s in new.sockets}
        for name in (*changes.removed, *changes.changed):
            self.sockets.pop(name).close()
        for name in (*changes.added, *changes.changed):
            self._add_socket(configs[name])

    async def reload_all(self, graceful: bool = True, sequential: bool = False) -> None:
        for watcher in self.by_priority(self.watchers.values(), reverse=True):
            await watcher.reload(graceful, sequential)
        for watcher in self.watchers.values():
            watcher.reopen_streams()

    # -- events ------------------------------------------------------------------

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish(topic, payload)

    def numprocesses(self) -> int:
        return sum(len(w.processes) for w in self.watchers.values())
