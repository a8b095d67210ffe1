"""The measurements. Each takes a started-from-scratch Daemon and returns
plain numbers (and raw samples) in a dict, or raises on failure.

Every wait has a deadline, so a daemon that hangs costs a bounded time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import procfs
import zmq
from daemons import SLEEP, Daemon, DaemonError

SLEEP_NAME = Path(SLEEP).name
POLL_INTERVAL = 0.001  # seconds between two looks at /proc


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(samples: list[float], scale: float = 1.0) -> dict[str, float]:
    return {
        "median": statistics.median(samples) * scale,
        "p90": percentile(samples, 0.9) * scale,
        "min": min(samples) * scale,
        "max": max(samples) * scale,
    }


class Children:
    """The daemon's children that run `sleep`, learnt incrementally."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.running: set[int] = set()

    def refresh(self) -> set[int]:
        """Update the running set; return the pids that are new since last look."""
        current = procfs.children(self.daemon.pid)
        self.running &= current
        new = {
            pid
            for pid in current - self.running
            if procfs.program(pid) == SLEEP_NAME and not procfs.is_zombie(pid)
        }
        self.running |= new
        return new

    def wait_for(self, count: int, timeout: float) -> float:
        """Wait until `count` are running; returns the perf_counter time then."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if len(self.running) >= count:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{self.daemon.name}: {len(self.running)} of {count} processes "
                    f"running after {timeout}s"
                )
            self.daemon.check_alive()
            time.sleep(POLL_INTERVAL * 5)


def respawn(
    daemon: Daemon, samples: int, settle: float, max_pause: float
) -> dict[str, Any]:
    """Kill -9 one child at a time; time until its replacement has exec'd.

    The daemon runs `samples` processes and each is killed once, after all
    have been up for `settle` seconds, so that no daemon takes the kills for
    a crash loop and backs off. Before each kill the harness pauses for a
    random time up to `max_pause`, so that kills do not fall in step with a
    daemon that polls (Circus looks every 5 s, supervisor every 1 s): in step,
    every kill would wait for a whole period.
    """
    pauses = random.Random(samples)
    daemon.start(samples)
    daemon.wait_ready()
    children = Children(daemon)
    children.wait_for(samples, timeout=60)
    time.sleep(settle)

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    events = daemon.subscribe(context) if daemon.has_events else None
    poller = zmq.Poller()
    if events is not None:
        poller.register(events, zmq.POLLIN)
        time.sleep(0.5)  # a SUB socket misses what is sent while it connects
    proc_times: list[float] = []
    event_times: list[float] = []
    missed_events = 0
    try:
        for victim in sorted(children.running):
            time.sleep(pauses.uniform(0, max_pause))
            proc_time, event_time = _kill_and_wait(daemon, children, victim, poller)
            proc_times.append(proc_time)
            if event_time is not None:
                event_times.append(event_time)
            elif events is not None:
                missed_events += 1
    finally:
        if events is not None:
            events.close()
        context.term()

    result: dict[str, Any] = {
        "latency_ms": summary(proc_times, 1000),
        "samples_ms": [t * 1000 for t in proc_times],
    }
    if events is not None:
        result["event_missed"] = missed_events
        if event_times:
            result["event_latency_ms"] = summary(event_times, 1000)
    return result


def _kill_and_wait(
    daemon: Daemon, children: Children, victim: int, poller: zmq.Poller
) -> tuple[float, float | None]:
    """(seconds to the new child in /proc, seconds to its spawn event)."""
    before = set(children.running)
    spawn_events: dict[int, float] = {}  # pid -> when its event arrived
    proc_time: float | None = None
    killed_at = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    deadline = killed_at + 30
    while time.perf_counter() < deadline:
        if poller.sockets:
            _receive_spawns(poller, spawn_events)
        else:
            time.sleep(POLL_INTERVAL)
        if proc_time is None and children.refresh():
            proc_time = time.perf_counter() - killed_at
        if proc_time is None:
            continue
        new = children.running - before
        seen = [spawn_events[pid] for pid in new if pid in spawn_events]
        if seen:
            return proc_time, min(seen) - killed_at
        if not poller.sockets or time.perf_counter() - killed_at > proc_time + 2:
            return proc_time, None
    daemon.check_alive()
    raise DaemonError(f"{daemon.name}: no new process 30s after kill -9 of {victim}")


def _receive_spawns(poller: zmq.Poller, spawn_events: dict[int, float]) -> None:
    for socket, _ in poller.poll(round(POLL_INTERVAL * 1000)):
        while True:
            try:
                _topic, body = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            pid = json.loads(body).get("process_pid")
            spawn_events.setdefault(pid, time.perf_counter())


def fleet(
    daemon: Daemon,
    processes: int,
    which: Iterable[str],
    rounds: int,
    idle_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Start `processes` children, then measure idle cost and status calls.

    Returns one result (or error) per scenario in `which`: start, idle, status.
    """
    which = set(which)
    results: dict[str, dict[str, Any]] = {}
    launched = time.perf_counter()
    daemon.start(processes)
    children = Children(daemon)
    all_running = children.wait_for(processes, timeout=max(60, processes / 5))
    if "start" in which:
        results["start"] = {"seconds": all_running - launched}
    daemon.wait_ready()
    time.sleep(2)  # let the daemon finish whatever follows the last spawn

    if "idle" in which:
        results["idle"] = idle(daemon, idle_seconds)
    if "status" in which:
        results["status"] = status(daemon, rounds)
    children.refresh()
    if len(children.running) != processes:
        raise DaemonError(
            f"{daemon.name}: {len(children.running)} of {processes} still running "
            "at the end"
        )
    return results


def idle(daemon: Daemon, seconds: float) -> dict[str, Any]:
    cpu_before = procfs.cpu_seconds(daemon.pid)
    voluntary_before, involuntary_before = procfs.context_switches(daemon.pid)
    time.sleep(seconds)
    daemon.check_alive()
    cpu = procfs.cpu_seconds(daemon.pid) - cpu_before
    voluntary, involuntary = procfs.context_switches(daemon.pid)
    return {
        "seconds": seconds,
        "cpu_percent": cpu / seconds * 100,
        "wakeups_per_s": (voluntary - voluntary_before) / seconds,
        "involuntary_per_s": (involuntary - involuntary_before) / seconds,
        "rss_mib": procfs.rss_bytes(daemon.pid) / 2**20,
    }


def status(daemon: Daemon, rounds: int) -> dict[str, Any]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        daemon.ping(timeout=10)
        times.append(time.perf_counter() - started)
    return {"latency_ms": summary(times, 1000), "rounds": rounds}


def popen_loop(processes: int) -> dict[str, Any]:
    """The floor for `start`: a bare Python loop that Popens the children."""
    children: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        for _ in range(processes):
            children.append(subprocess.Popen([SLEEP, "600"]))
        elapsed = time.perf_counter() - started
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
    return {"seconds": elapsed}
