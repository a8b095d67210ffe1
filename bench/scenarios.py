"""The measurements. Each takes a Daemon that has not been started yet, runs
it, and returns one result per table cell: {cell: {field: number or list of
samples}} or {cell: {"error": text}}. Cells are named "scenario.size", for
example "status.500" or "rss.0".

Every wait has a deadline, so a daemon that hangs costs a bounded time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procfs
import zmq
from daemons import AS_USER, SLEEP, Daemon, DaemonError, Program, sleepers

SLEEP_NAME = Path(SLEEP).name
POLL_INTERVAL = 0.001  # seconds between two looks at /proc
CLI_TIMEOUT = 60.0

Cells = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Sizes:
    """What one fleet run measures, and the options of those measurements."""

    calls: int = 200  # status round trips per run
    cli_runs: int = 5  # CLI invocations per run
    idle_seconds: float = 30.0
    rest: float = 2.0  # seconds after the last child is up before measuring


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class Children:
    """The daemon's children that have exec'd one of `programs`, learnt
    incrementally."""

    def __init__(
        self, daemon: Daemon, programs: tuple[str, ...] = (SLEEP_NAME,)
    ) -> None:
        self.daemon = daemon
        self.programs = programs
        self.running: set[int] = set()

    def refresh(self) -> set[int]:
        """Update the running set; return the pids that are new since last look."""
        current = procfs.children(self.daemon.pid)
        self.running &= current
        new = {
            pid
            for pid in current - self.running
            if procfs.program(pid) in self.programs and not procfs.is_zombie(pid)
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


# -- respawn ------------------------------------------------------------------


def respawn(daemon: Daemon, kills: int, settle: float, max_pause: float) -> Cells:
    """Kill -9 one child at a time; time until its replacement has exec'd.

    The daemon runs `kills` processes and each is killed once, after all have
    been up for `settle` seconds, so that no daemon takes the kills for a
    crash loop and backs off. Before each kill the harness pauses for a
    random time up to `max_pause`, so that kills do not fall in step with a
    daemon that polls (Circus looks every 5 s, supervisor every 1 s): in step,
    every kill would wait for a whole period.
    """
    pauses = random.Random()
    daemon.start(sleepers(kills))
    daemon.wait_ready()
    children = Children(daemon)
    children.wait_for(kills, timeout=60)
    time.sleep(settle)

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    events = (
        daemon.subscribe(context, "watcher.sleeper.spawn")
        if daemon.has_events
        else None
    )
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
            proc_times.append(proc_time * 1000)
            if event_time is not None:
                event_times.append(event_time * 1000)
            elif events is not None:
                missed_events += 1
    finally:
        if events is not None:
            events.close()
        context.term()

    result: dict[str, Any] = {"latency_ms": proc_times}
    if events is not None:
        result["event_ms"] = event_times
        result["event_missed"] = missed_events
    return {f"respawn.{kills}": result}


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


# -- a fleet of sleepers: start, idle, rss, status, cli, stop -------------------


def fleet(daemon: Daemon, processes: int, which: Iterable[str], sizes: Sizes) -> Cells:
    """Start `processes` children, then measure `which`, in a fixed order.

    The order is start, idle, rss, status, cli, stop: idle first so that
    nothing the harness asked for is still being handled, stop last. With 0
    processes the daemon has one program that does not start.
    """
    which = [s for s in ("start", "idle", "rss", "status", "cli", "stop") if s in which]
    which = [s for s in which if daemon.takes_part(s)]
    cells: Cells = {}
    launched = time.perf_counter()
    daemon.start(sleepers(processes))
    children = Children(daemon)
    all_running = children.wait_for(processes, timeout=max(60, processes / 5))
    if "start" in which:
        cells[f"start.{processes}"] = {
            "seconds": all_running - launched,
            "cpu_s": procfs.cpu_seconds(daemon.pid),
        }
    daemon.wait_ready()
    time.sleep(sizes.rest)  # let the daemon finish whatever follows the last spawn

    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "idle": lambda: idle(daemon, sizes.idle_seconds),
        "rss": lambda: {"mib": procfs.rss_bytes(daemon.pid) / 2**20},
        "status": lambda: status(daemon, sizes.calls),
        "cli": lambda: cli(daemon, daemon.cli_status(), sizes.cli_runs),
        "stop": lambda: graceful_stop(daemon, children, processes),
    }
    for scenario in which:
        if scenario == "start":
            continue
        try:
            if scenario == "stop":
                _check_count(daemon, children, processes)
            cells[f"{scenario}.{processes}"] = steps[scenario]()
            if scenario != "stop":
                daemon.check_alive()
        except Exception as error:
            cells[f"{scenario}.{processes}"] = {"error": error_text(error)}
    return cells


def start_as(daemon: Daemon, processes: int) -> Cells:
    """`start`, with every process as another user, its groups and a limit.

    circusd and Circus: uid, gid and rlimit_nofile; supervisor: user (it
    sets no limits). Compare with `start` of the same size.
    """
    launched = time.perf_counter()
    daemon.start(sleepers(processes, user=AS_USER))
    running = Children(daemon).wait_for(processes, timeout=max(60, processes / 5))
    cpu = procfs.cpu_seconds(daemon.pid)
    return {f"start_as.{processes}": {"seconds": running - launched, "cpu_s": cpu}}


def _check_count(daemon: Daemon, children: Children, processes: int) -> None:
    children.refresh()
    if len(children.running) != processes:
        raise DaemonError(
            f"{daemon.name}: {len(children.running)} of {processes} processes "
            "running after the other measurements"
        )


def idle(daemon: Daemon, seconds: float) -> dict[str, Any]:
    cpu_before = procfs.cpu_seconds(daemon.pid)
    voluntary_before, involuntary_before = procfs.context_switches(daemon.pid)
    time.sleep(seconds)
    daemon.check_alive()
    cpu = procfs.cpu_seconds(daemon.pid) - cpu_before
    voluntary, involuntary = procfs.context_switches(daemon.pid)
    voluntary -= voluntary_before
    involuntary -= involuntary_before
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "switches": voluntary + involuntary,
        "voluntary": voluntary,
        "involuntary": involuntary,
    }


def status(daemon: Daemon, calls: int) -> dict[str, Any]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        daemon.ping(timeout=10)
        times.append((time.perf_counter() - started) * 1000)
    return {"latency_ms": times}


def cli(daemon: Daemon, argv: list[str], runs: int) -> dict[str, Any]:
    """Run a command line `runs` times; how long each took, start to exit."""
    times = []
    for _ in range(runs):
        took, _out = run_cli(daemon, argv)
        times.append(took * 1000)
    return {"latency_ms": times}


def run_cli(
    daemon: Daemon, argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CLI_TIMEOUT,
            cwd=daemon.directory,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        raise DaemonError(
            f"{daemon.name}: {argv[-1]} ran past {CLI_TIMEOUT}s"
        ) from error
    took = time.perf_counter() - started
    output = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-2:])
        raise DaemonError(
            f"{daemon.name}: `{Path(argv[0]).name} ... {argv[-1]}` exited "
            f"{done.returncode}: {tail}"
        )
    return took, output


def graceful_stop(daemon: Daemon, children: Children, processes: int) -> dict[str, Any]:
    """SIGTERM to the daemon; time until it and every process below it are gone."""
    tree = {p.pid for p in daemon.remember_descendants()}
    process = daemon.process
    assert process is not None
    started = time.perf_counter()
    daemon.terminate()
    deadline = time.monotonic() + 60
    while tree or process.poll() is None:
        tree = {pid for pid in tree if not procfs.is_zombie(pid)}
        if time.monotonic() > deadline:
            raise DaemonError(
                f"{daemon.name}: {len(tree)} processes still running and daemon "
                f"{'exited' if process.poll() is not None else 'running'} "
                "60s after SIGTERM"
            )
        time.sleep(POLL_INTERVAL * 5)
    return {"seconds": time.perf_counter() - started, "exit_code": process.returncode}


# -- output to a file ---------------------------------------------------------

LINE = ("circusd benchmark output line " + "0123456789" * 7)[:99]


def _writer_script(directory: Path, total: int) -> Path:
    """A child that writes `total` bytes of 100-byte lines, then sleeps."""
    script = directory / "writer.sh"
    script.write_text(f"#!/bin/sh\nyes '{LINE}' | head -c {total}\nexec {SLEEP} 600\n")
    return script


def output(daemon: Daemon, megabytes: int) -> Cells:
    """One child writes `megabytes` MB to stdout; the daemon writes it to a file.

    Timed from the child's appearance to the file holding every byte (or to
    5 s without growth: what is missing then is lost). The daemon's CPU time
    is counted over the same span.
    """
    total = megabytes * 1_000_000
    target = daemon.directory / "output.log"
    script = _writer_script(daemon.directory, total)
    daemon.start([Program("writer", ("/bin/sh", str(script)), 1, stdout=target)])
    # sh until its output is written, then sleep: a small write may be done
    # before the first look.
    children = Children(daemon, programs=("sh", SLEEP_NAME))
    started = children.wait_for(1, timeout=30)
    cpu_before = procfs.cpu_seconds(daemon.pid)
    size, ended = _wait_for_file(daemon, target, total, stall=5.0)
    cpu = procfs.cpu_seconds(daemon.pid) - cpu_before
    return {
        f"output.{megabytes}": {
            "seconds": ended - started,
            "lost_bytes": max(0, total - size),
            "extra_bytes": max(0, size - total),
            "cpu_s": cpu,
        }
    }


def _wait_for_file(
    daemon: Daemon, path: Path, total: int, stall: float
) -> tuple[int, float]:
    """(size, perf_counter time) when `path` holds `total` bytes or stops growing."""
    size = 0
    grew_at = time.perf_counter()
    while True:
        try:
            current = path.stat().st_size
        except FileNotFoundError:
            current = 0
        now = time.perf_counter()
        if current != size:
            size, grew_at = current, now
        if size >= total:
            return size, now
        if now - grew_at > stall:
            daemon.check_alive()
            return size, grew_at
        time.sleep(POLL_INTERVAL * 5)


def output_floor(directory: Path, megabytes: int) -> Cells:
    """The floor for `output`: the same writer piped into `cat > file`."""
    total = megabytes * 1_000_000
    target = directory / "output.log"
    started = time.perf_counter()
    writer = subprocess.Popen(
        ["/bin/sh", "-c", f"yes '{LINE}' | head -c {total}"], stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    with open(target, "wb") as file:
        cat = subprocess.Popen(["cat"], stdin=writer.stdout, stdout=file)
    writer.stdout.close()
    _pid, _status, usage = os.wait4(cat.pid, 0)
    cat.returncode = 0  # reaped by wait4
    ended = time.perf_counter()
    writer.wait(30)
    size = target.stat().st_size
    return {
        f"output.{megabytes}": {
            "seconds": ended - started,
            "lost_bytes": max(0, total - size),
            "extra_bytes": max(0, size - total),
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
    }


# -- reload a config where one watcher changed ----------------------------------


def reload(daemon: Daemon, watchers: int, rest: float) -> Cells:
    """`watchers` programs of one process; change the first one's command, reload.

    Timed from running the daemon's reload command line (circusctl
    reloadconfig, supervisorctl update) to its exit, and to the changed
    program's new process running. Also counts processes of unchanged
    programs that the reload replaced (none should be).
    """
    programs = [Program(f"w{i:03d}", (SLEEP, "600"), 1) for i in range(watchers)]
    daemon.start(programs)
    children = Children(daemon)
    children.wait_for(watchers, timeout=60)
    daemon.wait_ready()
    time.sleep(rest)
    children.refresh()
    before = set(children.running)

    changed = (SLEEP, "601")
    programs[0] = Program(programs[0].name, changed, 1)
    daemon.write_config(programs)
    started = time.perf_counter()
    command_seconds, _out = run_cli(daemon, daemon.cli_reload())
    new_pid = _wait_for_argv(daemon, changed, timeout=60)
    up_seconds = time.perf_counter() - started

    time.sleep(rest)  # anything the reload restarts needlessly has gone by now
    children.refresh()
    replaced = len(before - children.running)
    return {
        f"reload.{watchers}": {
            "command_s": command_seconds,
            "up_s": up_seconds,
            "unchanged_replaced": max(0, replaced - 1),
            "new_pid": new_pid,
        }
    }


def _wait_for_argv(daemon: Daemon, argv: tuple[str, ...], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    wanted = list(argv)
    while time.monotonic() < deadline:
        for pid in procfs.children(daemon.pid):
            if procfs.cmdline(pid) == wanted and not procfs.is_zombie(pid):
                return pid
        daemon.check_alive()
        time.sleep(POLL_INTERVAL * 5)
    raise DaemonError(f"{daemon.name}: no `{' '.join(argv)}` {timeout}s after reload")
