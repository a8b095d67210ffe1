"""What the console knows about circusd's watchers and processes.

Filled from control replies (``status``, ``stats``, ``get``) after each
event, and from the statistics stream (``stat.<watcher>`` and
``stat.<watcher>.<pid>``, Circus's format) for the numbers and the charts.
Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HISTORY = 300  # samples per chart series: five minutes at one per second


def topic_name(name: str) -> str:
    """A watcher's name as event and statistics topics spell it (Circus's
    rule, reference §2.4; circusd.watcher applies the same)."""
    return name.lower().replace(" ", "_")


_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size(value: Any) -> float | None:
    """Bytes from Circus's human sizes (``mem_info1``: "512B", "14.1M")."""
    if not isinstance(value, str) or not value or value[-1] not in _UNITS:
        return None
    try:
        return float(value[:-1]) * _UNITS[value[-1]]
    except ValueError:
        return None


def number(value: Any) -> float | None:
    """A float from a stats field ("N/A", missing and strings give None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass
class ProcessView:
    pid: int
    wid: int | None = None
    user: str = ""
    uid: int | None = None  # the user's number, when the console can tell
    cpu: float | None = None
    mem: float | None = None  # percent of the host's memory
    rss: float | None = None  # bytes
    age: float | None = None  # seconds, as of ``sampled``
    sampled: float = 0.0  # time.time() of the sample

    def update(self, info: Mapping[str, Any], now: float) -> None:
        wid = info.get("wid")
        if isinstance(wid, int):
            self.wid = wid
        if isinstance(info.get("username"), str):
            self.user = info["username"]
        self.cpu = number(info.get("cpu"))
        self.mem = number(info.get("mem"))
        self.rss = size(info.get("mem_info1"))
        self.age = number(info.get("age"))
        self.sampled = now

    def age_now(self, now: float) -> float | None:
        return None if self.age is None else self.age + max(now - self.sampled, 0)


@dataclass
class WatcherView:
    name: str
    status: str = "unknown"
    reason: str | None = None
    target: int | None = None  # the numprocesses option
    processes: dict[int, ProcessView] = field(default_factory=dict)
    cpu: float | None = None  # mean over the processes
    mem: float | None = None  # sum over the processes
    rss: float | None = None  # bytes, sum over the processes

    def set_processes(self, infos: Mapping[str, Any], now: float) -> None:
        """From a ``stats`` reply: ``{pid: info or "No such process"}``."""
        found: dict[int, ProcessView] = {}
        for key, info in infos.items():
            if not str(key).isdecimal() or not isinstance(info, dict):
                continue
            pid = int(key)
            view = self.processes.get(pid) or ProcessView(pid)
            view.update(info, now)
            found[pid] = view
        self.processes = dict(sorted(found.items()))
        cpus = [p.cpu for p in found.values() if p.cpu is not None]
        mems = [p.mem for p in found.values() if p.mem is not None]
        self.cpu = sum(cpus) / len(cpus) if cpus else None
        self.mem = sum(mems) if mems else None
        self.rss = self.total_rss()

    def total_rss(self) -> float | None:
        sizes = [p.rss for p in self.processes.values() if p.rss is not None]
        return sum(sizes) if sizes else None


# time, CPU %, memory % of the host, resident memory in bytes
Point = tuple[float, float | None, float | None, float | None]


@dataclass(frozen=True)
class Sample:
    """One statistics message, for the hub: ``pid`` None for a watcher."""

    watcher: str
    pid: int | None
    point: Point
    age: float | None = None

    @property
    def series(self) -> str:
        return self.watcher if self.pid is None else f"{self.watcher}/{self.pid}"

    def as_json(self) -> dict[str, Any]:
        t, cpu, mem, rss = self.point
        return {
            "series": self.series,
            "watcher": self.watcher,
            "pid": self.pid,
            "t": t,
            "cpu": cpu,
            "mem": mem,
            "rss": rss,
            "age": self.age,
        }


def no_uid(name: str) -> int | None:
    return None


class Model:
    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        uid_of: Callable[[str], int | None] = no_uid,
    ) -> None:
        """``uid_of``: a process's user number from the user name circusd
        reports (its stats carry no number, as in Circus)."""
        self.clock = clock
        self.uid_of = uid_of
        self.watchers: dict[str, WatcherView] = {}
        self.history: dict[str, deque[Point]] = {}
        self.problem: str | None = None  # why circusd cannot be reached
        self.stats_stream: str | None = None  # where the charts come from

    # -- names ------------------------------------------------------------------

    def find(self, name: str) -> WatcherView | None:
        """A watcher by name, or by the lowercased name used in topics."""
        view = self.watchers.get(name)
        if view is not None:
            return view
        wanted = topic_name(name)
        for view in self.watchers.values():
            if topic_name(view.name) == wanted:
                return view
        return None

    # -- control replies ----------------------------------------------------------

    def replace_all(
        self,
        statuses: Mapping[str, str],
        reasons: Mapping[str, str],
        infos: Mapping[str, Mapping[str, Any]],
        targets: Mapping[str, int | None],
    ) -> None:
        kept = {}
        for name in sorted(statuses, key=str.lower):
            view = self.watchers.get(name) or WatcherView(name)
            self._fill(view, statuses[name], reasons.get(name),
                       infos.get(name, {}), targets.get(name))  # fmt: skip
            kept[name] = view
        self.watchers = kept
        self._forget_history(kept.values())

    def replace_one(
        self,
        name: str,
        status: str,
        reason: str | None,
        info: Mapping[str, Any],
        target: int | None,
    ) -> None:
        view = self.watchers.get(name)
        if view is None:
            view = self.watchers[name] = WatcherView(name)
            self.watchers = dict(
                sorted(self.watchers.items(), key=lambda i: i[0].lower())
            )
        self._fill(view, status, reason, info, target)
        self._forget_history(self.watchers.values())

    def remove(self, name: str) -> None:
        self.watchers.pop(name, None)
        self._forget_history(self.watchers.values())

    def _fill(
        self,
        view: WatcherView,
        status: str,
        reason: str | None,
        info: Mapping[str, Any],
        target: int | None,
    ) -> None:
        view.status, view.reason, view.target = status, reason, target
        view.set_processes(info, self.clock())
        for process in view.processes.values():
            process.uid = self.uid_of(process.user) if process.user else None

    def _forget_history(self, views: Iterable[WatcherView]) -> None:
        alive = set()
        for view in views:
            alive.add(view.name)
            alive.update(f"{view.name}/{pid}" for pid in view.processes)
        for series in [s for s in self.history if s not in alive]:
            del self.history[series]

    # -- the statistics stream ------------------------------------------------------

    def apply_stat(self, topic: str, data: Mapping[str, Any]) -> Sample | None:
        """``stat.<watcher>`` or ``stat.<watcher>.<pid>``; other topics (circus,
        sockets) and unknown watchers give None."""
        parts = topic.split(".")
        if parts[0] != "stat" or len(parts) not in (2, 3):
            return None
        view = self.find(parts[1])
        if view is None:
            return None
        now = self.clock()
        cpu, mem = number(data.get("cpu")), number(data.get("mem"))
        if len(parts) == 2:
            # The aggregate comes after its processes' messages of the same
            # tick; their resident sizes add up to the watcher's.
            view.cpu, view.mem, view.rss = cpu, mem, view.total_rss()
            sample = Sample(view.name, None, (round(now, 2), cpu, mem, view.rss))
        else:
            if not parts[2].isdecimal():
                return None
            pid = int(parts[2])
            process = view.processes.get(pid)
            if process is None:
                return None  # not ours yet: the next refresh adds it
            process.update(data, now)
            point = (round(now, 2), cpu, mem, process.rss)
            sample = Sample(view.name, pid, point, process.age)
        self.history.setdefault(sample.series, deque(maxlen=HISTORY)).append(
            sample.point
        )
        return sample

    def series_of(self, watcher: str | None) -> dict[str, list[Point]]:
        """Chart history: every watcher's series, or one watcher's and its
        processes'."""
        if watcher is None:
            wanted = set(self.watchers)
        else:
            view = self.watchers.get(watcher)
            wanted = (
                set()
                if view is None
                else {view.name} | {f"{view.name}/{pid}" for pid in view.processes}
            )
        return {name: list(points) for name, points in self.history.items()
                if name in wanted}  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "problem": self.problem,
            "stats_stream": self.stats_stream,
            "watchers": [
                {"name": v.name, "status": v.status, "reason": v.reason,
                 "numprocesses": v.target, "cpu": v.cpu, "mem": v.mem, "rss": v.rss,
                 "processes": [
                     {"pid": p.pid, "wid": p.wid, "user": p.user, "uid": p.uid,
                      "cpu": p.cpu,
                      "mem": p.mem, "rss": p.rss, "age": p.age_now(now)}
                     for p in v.processes.values()
                 ]}
                for v in self.watchers.values()
            ],
        }  # fmt: skip
