"""statsd: a counter for every event (StatsdEmitter), gauges of each
watcher's CPU and memory (FullStats). Circus's metric names are kept."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from circusd.client.errors import CallError
from circusd.config.plugin_options import BUILTINS, byte_size
from circusd.errors import ValueProblem
from circusd.plugins.base import Plugin, split_topic

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def metric_part(text: str) -> str:
    """One dot-separated part of a metric name. statsd's own separators
    (``:``, ``|``, ``@``), dots and whitespace become ``_``: a watcher named
    ``plugin:statsd`` is ``plugin_statsd``."""
    return _UNSAFE.sub("_", text) or "_"


class StatsdClient:
    """statsd lines over UDP. A line that cannot be sent is counted in
    ``dropped``, never raised: metrics must not take the plugin down."""

    def __init__(self, host: str, port: int, prefix: str, sample_rate: float) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM
        )[0]
        self.address = address
        self.prefix = prefix
        self.sample_rate = sample_rate
        self.dropped = 0
        self._socket = socket.socket(family, kind, proto)
        self._socket.setblocking(False)

    def increment(self, bucket: str, count: int = 1) -> None:
        if self.sample_rate < 1:
            if random.random() >= self.sample_rate:
                return
            self._send(bucket, f"{count}|c|@{self.sample_rate:g}")
        else:
            self._send(bucket, f"{count}|c")

    def gauge(self, bucket: str, value: float) -> None:
        self._send(bucket, f"{value:g}|g" if isinstance(value, float) else f"{value}|g")

    def _send(self, bucket: str, value: str) -> None:
        line = f"{self.prefix}.{bucket}:{value}".encode()
        try:
            self._socket.sendto(line, self.address)
        except OSError:
            self.dropped += 1

    def close(self) -> None:
        self._socket.close()


class _StatsdPlugin(Plugin):
    statsd: StatsdClient

    def handle_init(self) -> None:
        application = metric_part(self.config["application_name"])
        try:
            self.statsd = StatsdClient(
                self.config["host"],
                self.config["port"],
                f"circus.{application}.watcher",
                self.config["sample_rate"],
            )
        except OSError as exc:
            raise OSError(
                f"cannot send to statsd at {self.config['host']}:"
                f"{self.config['port']}: {exc.strerror or exc}"
            ) from None

    def handle_stop(self) -> None:
        self.statsd.close()


class StatsdEmitter(_StatsdPlugin):
    """Every event becomes a count: ``circus.APP.watcher.WATCHER.EVENT``."""

    options = BUILTINS["statsd.StatsdEmitter"].options

    def handle_recv(self, topic: str, event: dict[str, Any]) -> None:
        watcher, action = split_topic(topic)
        self.statsd.increment(f"{metric_part(watcher)}.{metric_part(action)}")


class FullStats(_StatsdPlugin):
    """Every ``loop_rate`` seconds, gauges per watcher (plugins left out):
    ``_stats.WATCHER.watchers_num`` (its processes), ``cpu_max``,
    ``cpu_sum``, ``mem_pct_max``, ``mem_pct_sum``, ``mem_max`` and
    ``mem_sum`` (resident bytes)."""

    options = BUILTINS["statsd.FullStats"].options

    def handle_init(self) -> None:
        super().handle_init()
        self.every(self.config["loop_rate"], self.look_after)

    async def look_after(self) -> None:
        try:
            reply = await self.call("stats")
        except CallError as exc:
            self.statsd.increment("_stats.error")
            self.log.warning("stats failed error=%s", exc)
            return
        infos = reply.get("infos")
        if not isinstance(infos, Mapping):
            return
        for name, processes in infos.items():
            if name.startswith("plugin:") or not isinstance(processes, Mapping):
                continue
            self.send_gauges(metric_part(name), live(processes.values()))

    def send_gauges(self, name: str, processes: list[dict[str, Any]]) -> None:
        self.statsd.gauge(f"_stats.{name}.watchers_num", len(processes))
        if not processes:
            return
        cpus = [float(p["cpu"]) for p in processes]
        mems = [float(p["mem"]) for p in processes]
        rss = [resident_bytes(p) for p in processes]
        for what, numbers in (("cpu", cpus), ("mem_pct", mems), ("mem", rss)):
            self.statsd.gauge(f"_stats.{name}.{what}_max", max(numbers))
            self.statsd.gauge(f"_stats.{name}.{what}_sum", sum(numbers))


def live(infos: Iterable[Any]) -> list[dict[str, Any]]:
    """The entries of a ``stats`` reply that describe a running process."""
    return [
        info
        for info in infos
        if isinstance(info, dict)
        and isinstance(info.get("cpu"), (int, float))
        and isinstance(info.get("mem"), (int, float))
    ]


def resident_bytes(info: Mapping[str, Any]) -> int:
    """``mem_info1`` (``"1.4M"``) in bytes; 0 when it cannot be read."""
    try:
        return byte_size(info.get("mem_info1"))
    except ValueProblem:
        return 0
