"""Per-process statistics in Circus's shape, read with psutil."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

GONE = "No such process (stopped?)"

# psutil keeps the previous CPU sample inside the Process object, so the
# objects are kept between calls; entries of processes that exited go away.
_cache: dict[int, psutil.Process] = {}


def human_bytes(count: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if count < 1024 or unit == "T":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _process(pid: int) -> psutil.Process:
    cached = _cache.get(pid)
    if cached is None or not cached.is_running():
        cached = _cache[pid] = psutil.Process(pid)
    return cached


def forget_exited() -> None:
    for pid in [pid for pid, process in _cache.items() if not process.is_running()]:
        del _cache[pid]


def process_info(
    pid: int, started: float | None = None, wid: int | None = None
) -> dict[str, Any] | str:
    try:
        process = _process(pid)
        with process.oneshot():
            memory = process.memory_info()
            times = process.cpu_times()
            info: dict[str, Any] = {
                "pid": pid,
                "cpu": process.cpu_percent(None),
                "mem": round(process.memory_percent(), 1),
                "mem_info1": human_bytes(memory.rss),
                "mem_info2": human_bytes(memory.vms),
                "ctime": _cpu_time(times.user + times.system),
                "username": _username(process),
                "nice": process.nice(),
                "create_time": process.create_time(),
                "age": time.time() - process.create_time(),
                "cmdline": os.path.basename((process.cmdline() or [""])[0]),
            }
            children = process.children()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        _cache.pop(pid, None)
        return GONE
    except psutil.AccessDenied:
        return "access denied"
    info["children"] = [
        child
        for child in (process_info(c.pid) for c in children)
        if isinstance(child, dict)
    ]
    if started is not None:
        info["started"] = started
    if wid is not None:
        info["wid"] = wid
    return info


def _username(process: psutil.Process) -> str:
    try:
        return process.username()
    except KeyError:
        return str(process.uids().real)


def _cpu_time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"
