"""Plugins as watchers.

Each ``[plugin:NAME]`` section runs ``python -m circusd.plugins`` as a
singleton watcher named ``plugin:NAME``, as in Circus: the watcher machinery
starts it, restarts it with backoff when it dies (``max_retry``, then
``failed``), stops it, and ``list`` and ``status`` show it. Circus's
Flapping plugin is the exception: the restart policy already does its work,
so it runs nothing.

The plugin's settings never appear on its command line (``ps`` shows them,
and spaces broke them in Circus). Its stdin is one end of a socket pair:
circusd writes the settings there as one JSON document, and reads back, one
JSON object per line, that the plugin is ready, why it cannot run (shown by
``status``), and its log records (written to circusd's log, wherever that
goes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from circusd import process as proc
from circusd.config.diff import Changes
from circusd.config.model import Config, PluginConfig, WatcherConfig
from circusd.config.plugin_options import builtin, is_flapping
from circusd.control.auth import Caller, owner_uid
from circusd.control.policy import Policy
from circusd.errors import SpawnError
from circusd.plugins.base import Settings
from circusd.reaper import describe_exit
from circusd.users import group_id
from circusd.watcher import Watcher

if TYPE_CHECKING:
    from circusd.arbiter import Arbiter

log = logging.getLogger(__name__)

PREFIX = "plugin:"
GRACEFUL_TIMEOUT = 5.0
MAX_LINE = 1 << 16
MAX_READS = 16  # per wake-up: a chatty plugin cannot hold circusd's loop
MAX_REASON = 500
_LEVELS = (
    logging.DEBUG,
    logging.INFO,
    logging.WARNING,
    logging.ERROR,
    logging.CRITICAL,
)


def watcher_name(plugin: PluginConfig) -> str:
    return PREFIX + plugin.name


def is_plugin_name(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def runnable(plugins: tuple[PluginConfig, ...]) -> list[PluginConfig]:
    """The plugins that run a process: all but Circus's Flapping."""
    for plugin in plugins:
        if is_flapping(plugin.use):
            log.info(
                "plugin not started plugin=%s use=%s: crash loops are handled "
                "by the built-in restart policy (max_retry, backoff)",
                plugin.name,
                plugin.use,
            )
    return [plugin for plugin in plugins if not is_flapping(plugin.use)]


def watcher_config(plugin: PluginConfig) -> WatcherConfig:
    return WatcherConfig(
        name=watcher_name(plugin),
        cmd=sys.executable,
        args=("-P", "-m", "circusd.plugins"),  # -P: no modules from the cwd
        singleton=True,
        priority=plugin.priority,
        autostart=plugin.active,
        uid=plugin.uid,
        gid=plugin.gid,
        max_retry=plugin.max_retry,
        graceful_timeout=GRACEFUL_TIMEOUT,
        # circusd's environment only for a plugin that runs as circusd's user
        copy_env=plugin.uid is None and plugin.gid is None,
        copy_path=True,  # circusd's own package, however it was installed
        pdeathsig=signal.SIGTERM,  # never outlive circusd
        source=plugin.source,
    )


def connect_address(configured: str, bound: str | None) -> str:
    """Where a client on this host reaches an endpoint circusd bound: the
    port actually bound (for ``:*``), a wildcard host as loopback."""
    if not configured.startswith("tcp://") or not bound:
        return configured
    host, _, port = bound[len("tcp://") :].rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"tcp://{host}:{port}"


@dataclass(frozen=True)
class Failure:
    """Why a plugin process said it cannot run."""

    reason: str
    permanent: bool


class Line:
    """circusd's end of one plugin process's socket: JSON objects, one a line."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.started = time.monotonic()
        self.closed = False
        self._buffer = b""

    def read(self, reads: int = MAX_READS) -> list[dict[str, Any]]:
        """What arrived so far, in at most ``reads`` reads (the loop calls
        again for the rest); at end of file ``closed`` is set."""
        messages = []
        for _ in range(reads):
            if self.closed:
                break
            try:
                data = self.socket.recv(MAX_LINE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            *lines, self._buffer = (self._buffer + data).split(b"\n")
            if len(self._buffer) > MAX_LINE:
                log.warning("plugin line too long, dropped bytes=%d", len(self._buffer))
                self._buffer = b""
            messages += [message for line in lines if (message := _decode(line))]
        return messages


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def printable(text: Any, limit: int) -> str:
    """One log line's worth of what a plugin sent: control characters
    escaped, so that a plugin cannot write a line of its own into the log."""
    value = str(text)[:limit]
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode()
        for ch in value
    )


class PluginWatcher(Watcher):
    def __init__(self, plugin: PluginConfig, arbiter: Arbiter) -> None:
        super().__init__(watcher_config(plugin), arbiter)
        self.plugin = plugin
        self.plugin_log = logging.getLogger(f"circusd.plugin.{plugin.name}")
        self._lines: dict[int, Line] = {}
        self._failures: dict[int, Failure] = {}
        self._pending: socket.socket | None = None

    # -- what the plugin is given --------------------------------------------------

    def settings(self) -> Settings:
        arbiter = self.arbiter
        circus = arbiter.config.circus
        publisher = arbiter.publisher
        level = logging.getLogger().getEffectiveLevel()
        return Settings(
            name=self.plugin.name,
            use=self.plugin.use,
            endpoint=arbiter.control_endpoint,
            pubsub_endpoint=connect_address(
                circus.pubsub_endpoint, publisher.bound if publisher else None
            ),
            options=dict(self.plugin.options),
            check_delay=circus.check_delay,
            loglevel=logging.getLevelName(level).lower(),
        )

    def access_problem(self) -> str | None:
        """Why this plugin's requests would be refused, known before it runs."""
        circus = self.arbiter.config.circus
        if circus.curve_secret_key:
            return "the control endpoint needs a CURVE key, and plugins have none"
        uid = self.identity.uid
        if uid is None or uid in (0, os.geteuid()):
            return None
        policy = Policy(
            daemon_uid=os.geteuid(),
            owner_uid=owner_uid(circus.endpoint_owner),
            readonly_gid=group_id(circus.readonly_group)
            if circus.readonly_group
            else None,
        )
        caller = Caller(uid, self.identity.gid)
        shipped = builtin(self.plugin.use)
        needs = shipped.needs if shipped is not None else "read"
        if policy.is_owner(caller) or (needs == "read" and policy.may_read(caller)):
            return None
        user = self.identity.name or str(uid)
        if needs == "operate":
            return (
                f"it runs as {user}, and its requests need root, circusd's own "
                f"user or the endpoint_owner: set endpoint_owner = {user}, or "
                "remove uid"
            )
        return (
            f"it runs as {user}, which may not use the control endpoint: set "
            f"endpoint_owner = {user}, add {user} to readonly_group, or remove uid"
        )

    # -- spawning ------------------------------------------------------------------

    def spawn_one(self) -> int | None:
        problem = self.access_problem()
        if problem is not None:
            self._give_up(problem)
            return None
        try:
            pid = super().spawn_one()
        finally:
            ours, self._pending = self._pending, None
        if ours is None:
            return pid
        if pid is None:
            ours.close()
            return None
        self._lines[pid] = Line(ours)
        self.loop.add_reader(ours.fileno(), self._readable, pid)
        return pid

    def _spawn_request(self, wid: int, extra_fds: list[int]) -> proc.SpawnRequest:
        request = super()._spawn_request(wid, extra_fds)
        ours, theirs = socket.socketpair()
        extra_fds.append(theirs.detach())  # closed in circusd once spawned
        self._pending = ours
        document = self.settings().to_json()
        ours.setblocking(False)
        try:
            ours.sendall(document)
            ours.shutdown(socket.SHUT_WR)
        except OSError as exc:  # settings larger than the socket buffer
            raise SpawnError(
                f"cannot pass the plugin's settings ({len(document)} bytes): {exc}"
            ) from None
        return dataclasses.replace(request, stdin_fd=extra_fds[-1])

    # -- what the plugin says ------------------------------------------------------

    def _readable(self, pid: int, reads: int = MAX_READS) -> None:
        line = self._lines.get(pid)
        if line is None:
            return
        for message in line.read(reads):
            self._message(pid, line, message)
        if line.closed:
            self._close_line(pid)

    def _close_line(self, pid: int) -> None:
        line = self._lines.pop(pid, None)
        if line is not None:
            self.loop.remove_reader(line.socket.fileno())
            line.socket.close()

    def _message(self, pid: int, line: Line, message: dict[str, Any]) -> None:
        if isinstance(message.get("log"), dict):
            record = message["log"]
            level = record.get("level")
            level = level if level in _LEVELS else logging.INFO
            self.plugin_log.log(level, "%s", printable(record.get("message"), 4096))
        elif "ready" in message:
            self.reason = None
            log.info(
                "plugin ready plugin=%s pid=%d after=%.3fs",
                self.plugin.name,
                pid,
                time.monotonic() - line.started,
            )
        elif isinstance(message.get("error"), dict):
            error = message["error"]
            failure = Failure(
                printable(error.get("reason"), MAX_REASON),
                error.get("permanent") is True,
            )
            self._failures[pid] = failure
            log.error(
                "plugin failed section=[plugin:%s] source=%s pid=%d reason=%r "
                "retried=%s",
                self.plugin.name,
                self.plugin.source or "-",
                pid,
                failure.reason,
                "no" if failure.permanent else "yes",
            )

    # -- exits ---------------------------------------------------------------------

    def _on_exit(self, pid: int, status: int) -> None:
        self._readable(pid, reads=1 << 20)  # all it wrote before it died
        super()._on_exit(pid, status)
        self._close_line(pid)
        self._failures.pop(pid, None)

    def _unexpected_exit(self, process: proc.Process, status: int) -> None:
        failure = self._failures.get(process.pid)
        if failure is not None and failure.permanent:
            self._give_up(failure.reason)
            return
        super()._unexpected_exit(process, status)

    def exit_reason(self, process: proc.Process, status: int) -> str:
        failure = self._failures.get(process.pid)
        if failure is None:
            return describe_exit(status)
        return f"{failure.reason} ({describe_exit(status)})"

    async def _replace_all(self, sequential: bool = False) -> dict[str, list[int]]:
        # One at a time: a plugin that binds a port (watchdog) must let go
        # of it before the next one starts.
        return await super()._replace_all(sequential=True)

    # -- a changed section ---------------------------------------------------------

    async def reconfigure(self, plugin: PluginConfig) -> None:
        """Settings reach a plugin when it starts, so a running plugin is
        started again with the new ones."""
        old = self.plugin
        was_running = self.is_running()
        await self.stop()
        self.plugin = plugin
        await self.apply_config(watcher_config(plugin))
        if plugin.active and (was_running or not old.active):
            await self.start()


def add_plugins(arbiter: Arbiter, plugins: tuple[PluginConfig, ...]) -> list[Watcher]:
    added: list[Watcher] = []
    for plugin in runnable(plugins):
        watcher = PluginWatcher(plugin, arbiter)
        arbiter.watchers[watcher.name.lower()] = watcher
        added.append(watcher)
    return added


async def reload_plugins(arbiter: Arbiter, new: Config, changes: Changes) -> None:
    """Apply the changed ``[plugin:NAME]`` sections of a reloaded config."""
    configs = {plugin.name: plugin for plugin in new.plugins}
    for name in (*changes.removed, *changes.changed):
        current = arbiter.watchers.get((PREFIX + name).lower())
        if isinstance(current, PluginWatcher) and (
            name in changes.removed or is_flapping(configs[name].use)
        ):
            await arbiter.remove_watcher(current)
    for name in changes.changed:
        current = arbiter.watchers.get((PREFIX + name).lower())
        if isinstance(current, PluginWatcher):
            await current.reconfigure(configs[name])
    fresh = [
        configs[name]
        for name in (*changes.added, *changes.changed)
        if (PREFIX + name).lower() not in arbiter.watchers
    ]
    for watcher in add_plugins(arbiter, tuple(fresh)):
        watcher.publish("add")
        if watcher.config.autostart:
            await watcher.start()
