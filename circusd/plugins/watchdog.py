"""watchdog: kill processes that stop sending heartbeats.

Each watched process sends UDP datagrams such as ``4242;1712345678.9``
(``msg_regex``) to ``ip:port``. A process not heard from for ``loop_rate`` ×
``max_count`` seconds gets circusd's ``kill`` command; its watcher starts a
new one. A new process has the same time for its first heartbeat.

Heartbeats are not authenticated: a local user who can send to the port can
keep a hung process alive (never get one killed).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from circusd.client.errors import CallError
from circusd.config.plugin_options import BUILTINS
from circusd.plugins.base import Plugin, split_topic

DATAGRAM = 2048


@dataclass
class Heartbeats:
    """When each watched pid was last heard from. Pure: time is passed in."""

    timeout: float
    _last: dict[int, tuple[str, float]] = field(default_factory=dict)

    def watch(self, pid: int, watcher: str, now: float) -> None:
        self._last[pid] = (watcher, now)

    def forget(self, pid: int) -> None:
        self._last.pop(pid, None)

    def beat(self, pid: int, now: float) -> bool:
        """Record a heartbeat; False for a pid that is not watched."""
        entry = self._last.get(pid)
        if entry is None:
            return False
        self._last[pid] = (entry[0], now)
        return True

    def silent(self, now: float) -> list[tuple[int, str, float]]:
        """(pid, watcher, seconds of silence) of every pid past the timeout;
        they are no longer watched."""
        found = [
            (pid, watcher, now - last)
            for pid, (watcher, last) in self._last.items()
            if now - last > self.timeout
        ]
        for pid, _, _ in found:
            del self._last[pid]
        return found

    def __len__(self) -> int:
        return len(self._last)


class WatchDog(Plugin):
    options = BUILTINS["watchdog.WatchDog"].options

    async def handle_init(self) -> None:
        config = self.config
        self.watchers = re.compile(config["watchers_regex"])
        self.message = re.compile(config["msg_regex"])
        self.heartbeats = Heartbeats(config["loop_rate"] * config["max_count"])
        self.socket = self._bind(config["ip"], config["port"])
        asyncio.get_running_loop().add_reader(self.socket.fileno(), self._receive)
        await self._discover()
        self.every(config["loop_rate"], self.look_after)

    def _bind(self, ip: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on udp {ip}:{port}: {exc.strerror}") from None
        sock.setblocking(False)
        self.log.info("listening for heartbeats address=%s:%d", ip, port)
        return sock

    def watched(self, watcher: str) -> bool:
        # Plugins send no heartbeats: watching them would kill them all.
        return not watcher.startswith("plugin:") and bool(self.watchers.match(watcher))

    async def _discover(self) -> None:
        """The processes that run already; later ones come as spawn events."""
        now = time.monotonic()
        names = (await self.call("list")).get("watchers", [])
        for name in names:
            if not self.watched(name):
                continue
            try:
                pids = (await self.call("list", name=name)).get("pids", [])
            except CallError:
                continue  # removed meanwhile
            for pid in pids:
                self.heartbeats.watch(int(pid), name, now)
        self.log.info("watching processes=%d", len(self.heartbeats))

    def handle_recv(self, topic: str, event: dict[str, Any]) -> None:
        watcher, action = split_topic(topic)
        pid = event.get("process_pid")
        if not isinstance(pid, int) or not self.watched(watcher):
            return
        if action == "spawn":
            self.heartbeats.watch(pid, watcher, time.monotonic())
        elif action == "reap":
            self.heartbeats.forget(pid)

    def _receive(self) -> None:
        while True:
            try:
                data = self.socket.recv(DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.warning("heartbeat not read error=%s", exc)
                return
            self.heard(data)

    def heard(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace").strip()
        found = self.message.match(text)
        try:
            pid = int(found.group("pid")) if found else None
        except ValueError:
            pid = None
        if pid is None:
            self.log.debug(
                "heartbeat ignored: does not match msg_regex text=%r", text[:80]
            )
        elif not self.heartbeats.beat(pid, time.monotonic()):
            self.log.debug("heartbeat from a process that is not watched pid=%d", pid)

    def look_after(self) -> None:
        for pid, watcher, silence in self.heartbeats.silent(time.monotonic()):
            self.log.warning(
                "no heartbeat, killing watcher=%s pid=%d silent=%.1fs",
                watcher,
                pid,
                silence,
            )
            properties: dict[str, Any] = {"name": watcher, "pid": pid}
            if self.config["watchers_stop_signal"] is not None:
                properties["signum"] = self.config["watchers_stop_signal"]
            if self.config["watchers_graceful_timeout"] is not None:
                properties["graceful_timeout"] = self.config[
                    "watchers_graceful_timeout"
                ]
            self.cast("kill", **properties)

    def handle_stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.socket.fileno())
        self.socket.close()
