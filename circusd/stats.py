"""Per-process statistics in Circus's shape, read with psutil.

One ``Sampler`` keeps a ``psutil.Process`` per pid between samples, because
``cpu`` is measured since the previous sample of the same object (the first
one says 0.0, as in Circus). The user name and the command of a process are
read now and then; the memory total once per batch; children come from one scan of
the process table per batch instead of one scan per process (psutil's
``children()`` reads every /proc entry each time it is called, which with
500 processes made the ``stats`` command take ten seconds).

The ``stats`` and ``dstats`` commands sample in a worker thread, never in the
event loop; the stats stream samples in its own process (circusd.metrics).
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

GONE = "No such process (stopped?)"
FIXED_FOR = 10.0  # seconds a process's user name and command are kept
UNUSED_FOR = 60.0  # seconds after which a process nobody asks about is dropped


@dataclass(frozen=True)
class Wanted:
    """A process to sample; ``started`` and ``wid`` are added to its info."""

    pid: int
    started: float | None = None
    wid: int | None = None


def human_bytes(count: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if count < 1024 or unit == "T":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    raise AssertionError("unreachable")


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over the process table."""
    found: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info.get("ppid")
        if isinstance(ppid, int):
            found.setdefault(ppid, []).append(process.pid)
    return found


class Sampler:
    """Samples processes; thread-safe (one batch at a time)."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._used: dict[int, float] = {}  # pid -> when last sampled
        # pid -> (username, command, when read): they change only on exec or
        # setuid, so they are read again after FIXED_FOR seconds, not each time.
        self._fixed: dict[int, tuple[str, str, float]] = {}
        self._users: dict[int, str] = {}
        self._lock = threading.Lock()

    def batch(
        self, wanted: Iterable[Wanted], children: bool = True
    ) -> dict[int, dict[str, Any] | str]:
        """Circus's info (or GONE) for each process, ``children`` included
        (recursively) when asked, otherwise an empty list as in the stream."""
        with self._lock:
            total = psutil.virtual_memory().total
            tree = children_map() if children else {}
            found = {
                item.pid: self._info(item.pid, total, tree, item.started, item.wid)
                for item in wanted
            }
            self._drop_unused()
            return found

    def usage(self, pids: Iterable[int]) -> dict[int, tuple[float, int]]:
        """CPU seconds (user + system) and RSS bytes of each live process."""
        with self._lock:
            found = {}
            for pid in pids:
                try:
                    process = self._process(pid)
                    with process.oneshot():
                        times = process.cpu_times()
                        rss = process.memory_info().rss
                except (
                    psutil.NoSuchProcess,
                    psutil.ZombieProcess,
                    psutil.AccessDenied,
                ):
                    self._drop(pid)
                    continue
                found[pid] = (times.user + times.system, rss)
            return found

    def keep_only(self, pids: set[int]) -> None:
        """Forget every process not in ``pids`` (their CPU baseline too)."""
        with self._lock:
            for pid in [pid for pid in self._processes if pid not in pids]:
                self._drop(pid)

    def _process(self, pid: int) -> psutil.Process:
        # No is_running() check: it reads /proc once more per process. A
        # process that exited raises NoSuchProcess and is dropped then.
        self._used[pid] = time.monotonic()
        cached = self._processes.get(pid)
        if cached is None:
            cached = self._processes[pid] = psutil.Process(pid)
        return cached

    def _drop(self, pid: int) -> None:
        self._processes.pop(pid, None)
        self._fixed.pop(pid, None)
        self._used.pop(pid, None)

    def _drop_unused(self) -> None:
        limit = time.monotonic() - UNUSED_FOR
        for pid in [pid for pid, used in self._used.items() if used < limit]:
            self._drop(pid)

    def _info(
        self,
        pid: int,
        total: int,
        tree: Mapping[int, list[int]],
        started: float | None = None,
        wid: int | None = None,
    ) -> dict[str, Any] | str:
        try:
            process = self._process(pid)
            with process.oneshot():
                memory = process.memory_info()
                times = process.cpu_times()
                created = process.create_time()
                username, cmdline = self._fixed_fields(process)
                info: dict[str, Any] = {
                    "pid": pid,
                    "cpu": process.cpu_percent(None),
                    "mem": round(100 * memory.rss / total, 1) if total else 0.0,
                    "mem_info1": human_bytes(memory.rss),
                    "mem_info2": human_bytes(memory.vms),
                    "ctime": _cpu_time(times.user + times.system),
                    "username": username,
                    "nice": process.nice(),
                    "create_time": created,
                    "age": time.time() - created,
                    "cmdline": cmdline,
                }
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._drop(pid)
            return GONE
        except psutil.AccessDenied:
            return "access denied"
        info["children"] = [
            child
            for child in (self._info(c, total, tree) for c in tree.get(pid, ()))
            if isinstance(child, dict)
        ]
        if started is not None:
            info["started"] = started
        if wid is not None:
            info["wid"] = wid
        return info

    def _fixed_fields(self, process: psutil.Process) -> tuple[str, str]:
        """User name and command (argv[0]'s base name), read now and then."""
        now = time.monotonic()
        fixed = self._fixed.get(process.pid)
        if fixed is None or now - fixed[2] > FIXED_FOR:
            uid = process.uids().real
            name = self._users.get(uid)
            if name is None:
                try:
                    name = pwd.getpwuid(uid).pw_name
                except KeyError:
                    name = str(uid)
                self._users[uid] = name
            command = os.path.basename((process.cmdline() or [""])[0])
            fixed = self._fixed[process.pid] = (name, command, now)
        return fixed[0], fixed[1]


def _cpu_time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"
