"""resource_watcher: act on a watcher whose processes use too much (or too
little) CPU or memory.

Every ``loop_rate`` seconds it asks circusd for the watcher's ``stats``. The
processes are judged together: the highest CPU and memory against the
``max_`` limits, the lowest against the ``min_`` limits, and the mean of the
highest CPU % and memory % against ``health_threshold``. When one limit has
been broken in more than ``max_count`` checks in a row, the watcher is
restarted. With ``process_children``, each child of a process is also judged
on its own, and a child that breaks a limit that often gets
``child_signal``. A watcher without processes is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from circusd.client.errors import CallError
from circusd.config.plugin_options import BUILTINS, MemoryLimit
from circusd.plugins.base import Plugin
from circusd.plugins.statsd import StatsdClient, live, metric_part, resident_bytes


@dataclass(frozen=True)
class Usage:
    """The highest and lowest use among some processes."""

    max_cpu: float
    min_cpu: float
    max_mem: float  # % of the host's memory
    min_mem: float
    max_rss: int  # bytes
    min_rss: int

    @classmethod
    def of(cls, processes: Iterable[dict[str, Any]]) -> Usage | None:
        found = list(processes)
        if not found:
            return None
        cpus = [float(p["cpu"]) for p in found]
        mems = [float(p["mem"]) for p in found]
        rss = [resident_bytes(p) for p in found]
        return cls(max(cpus), min(cpus), max(mems), min(mems), max(rss), min(rss))


@dataclass(frozen=True)
class Limits:
    max_cpu: float | None = 90.0
    min_cpu: float | None = None
    max_mem: MemoryLimit | None = MemoryLimit(90.0, percent=True)
    min_mem: MemoryLimit | None = None
    health_threshold: float | None = 75.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Limits:
        return cls(
            config["max_cpu"],
            config["min_cpu"],
            config["max_mem"],
            config["min_mem"],
            config["health_threshold"],
        )

    def broken(self, usage: Usage) -> list[str]:
        """The names of the limits ``usage`` breaks (statsd's words)."""
        found = []
        if self.max_cpu and usage.max_cpu > self.max_cpu:
            found.append("over_cpu")
        if self.min_cpu is not None and usage.min_cpu <= self.min_cpu:
            found.append("under_cpu")
        if self.max_mem is not None and _memory(usage, self.max_mem, True) > (
            self.max_mem.value
        ):
            found.append("over_memory")
        if self.min_mem is not None and _memory(usage, self.min_mem, False) < (
            self.min_mem.value
        ):
            found.append("under_memory")
        health = (usage.max_cpu + usage.max_mem) / 2
        if self.health_threshold and health > self.health_threshold:
            found.append("over_health")
        return found


def _memory(usage: Usage, limit: MemoryLimit, highest: bool) -> float:
    if limit.percent:
        return usage.max_mem if highest else usage.min_mem
    return usage.max_rss if highest else usage.min_rss


@dataclass
class Breaches:
    """Checks in a row that broke each limit, per subject (the watcher, or
    one child). Pure: the plugin feeds it what it saw."""

    max_count: int
    _counts: dict[Any, dict[str, int]] = field(default_factory=dict)

    def record(self, subject: Any, broken: list[str]) -> list[str]:
        """Count this check; the limits broken more than max_count times in a row."""
        before = self._counts.get(subject, {})
        counts = {name: before.get(name, 0) + 1 for name in broken}
        self._counts[subject] = counts
        return [name for name, count in counts.items() if count > self.max_count]

    def forget(self, subject: Any) -> None:
        self._counts.pop(subject, None)

    def keep_only(self, subjects: set[Any]) -> None:
        for subject in list(self._counts):
            if subject not in subjects:
                del self._counts[subject]


class ResourceWatcher(Plugin):
    options = BUILTINS["resource_watcher.ResourceWatcher"].options

    def handle_init(self) -> None:
        config = self.config
        self.watcher: str = config["watcher"] or config["service"]
        self.limits = Limits.from_config(config)
        self.breaches = Breaches(config["max_count"])
        application = metric_part(config["application_name"])
        self.statsd = StatsdClient(
            config["host"],
            config["port"],
            f"circus.{application}.watcher",
            config["sample_rate"],
        )
        self.prefix = f"_resource_watcher.{metric_part(self.watcher)}"
        self.every(config["loop_rate"], self.look_after)

    async def look_after(self) -> None:
        try:
            reply = await self.call("stats", name=self.watcher)
        except CallError as exc:
            self.statsd.increment(f"{self.prefix}.error")
            self.log.warning("stats failed watcher=%s error=%s", self.watcher, exc)
            return
        info = reply.get("info")
        processes = live(info.values()) if isinstance(info, dict) else []
        if not processes:
            self.breaches.keep_only(set())
            return
        self.judge_watcher(processes)
        if self.config["process_children"]:
            self.judge_children(processes)

    def judge_watcher(self, processes: list[dict[str, Any]]) -> None:
        usage = Usage.of(processes)
        assert usage is not None
        acted = self._judge("watcher", usage)
        if acted:
            self.log.warning(
                "limits broken, restarting watcher=%s limits=%s checks=%d",
                self.watcher,
                ",".join(acted),
                self.breaches.max_count + 1,
            )
            self.statsd.increment(f"{self.prefix}.restarting")
            self.cast("restart", name=self.watcher)
            self.breaches.keep_only(set())

    def judge_children(self, processes: list[dict[str, Any]]) -> None:
        seen: set[Any] = {"watcher"}
        for process in processes:
            for child in live(process.get("children") or []):
                subject = (process["pid"], child["pid"])
                seen.add(subject)
                usage = Usage.of([child])
                assert usage is not None
                acted = self._judge(subject, usage)
                if acted:
                    self.log.warning(
                        "limits broken, signalling child watcher=%s pid=%d "
                        "child=%d limits=%s signal=%d",
                        self.watcher,
                        process["pid"],
                        child["pid"],
                        ",".join(acted),
                        self.config["child_signal"],
                    )
                    self.cast(
                        "signal",
                        name=self.watcher,
                        pid=process["pid"],
                        childpid=child["pid"],
                        signum=self.config["child_signal"],
                    )
                    self.breaches.forget(subject)
        self.breaches.keep_only(seen)

    def _judge(self, subject: Any, usage: Usage) -> list[str]:
        broken = self.limits.broken(usage)
        for name in broken:
            self.statsd.increment(f"{self.prefix}.{name}")
        return self.breaches.record(subject, broken)

    def handle_stop(self) -> None:
        self.statsd.close()
