"""What the stats stream costs the control channel (docs/monitoring.md).

    .venv/bin/python bench/stats_load.py [--processes 500] [--calls 1000] [--rounds 3]

circusd runs `--processes` sleepers in three modes, one fresh daemon each,
in an order that rotates from round to round:

- off: no statistics (statsd false);
- idle: statsd on, nobody subscribed (circusd-stats runs and waits);
- subscribed: one subscriber to every ``stat.`` topic, so circusd-stats
  samples every process once a second.

In each, `--calls` ``status`` round trips on a kept-open connection, 2 ms
apart (so they straddle several sampling ticks), then the CPU time that
circusd and circusd-stats used over that span. Last, in each mode, the
``stats`` command for all processes, with ``status`` round trips sent on
another connection while it runs. Latencies are pooled over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import procfs
import psutil
import zmq
from daemons import CircusClient, CircusDaemon, Program, binary_of, sleepers
from scenarios import Children

MODES = ("off", "idle", "subscribed")


class StatsDaemon(CircusDaemon):
    def __init__(self, directory: Path, mode: str) -> None:
        super().__init__("circusd", binary_of("circusd"), directory)
        self.mode = mode

    @property
    def stats_endpoint(self) -> str:
        return f"ipc://{self.directory}/stats.sock"

    def render(self, programs: list[Program]) -> str:
        text = super().render(programs)
        if self.mode == "off":
            return text
        return text.replace(
            "[circus]\n", f"[circus]\nstats_endpoint = {self.stats_endpoint}\n", 1
        )

    def helper_pid(self) -> int | None:
        for child in psutil.Process(self.pid).children():
            if "circusd.metrics.helper" in " ".join(child.cmdline()):
                return child.pid
        return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def one_run(mode: str, processes: int, calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cdbench-", dir="/tmp") as where:
        daemon = StatsDaemon(Path(where), mode)
        daemon.start(sleepers(processes))
        context: zmq.Context[Any] = zmq.Context()
        subscriber = None
        try:
            daemon.wait_ready()
            Children(daemon).wait_for(processes, timeout=60)
            time.sleep(2.0)
            if mode == "subscribed":
                subscriber = context.socket(zmq.SUB)
                subscriber.setsockopt(zmq.LINGER, 0)
                subscriber.setsockopt(zmq.SUBSCRIBE, b"stat.")
                subscriber.setsockopt(zmq.RCVHWM, 0)
                subscriber.connect(daemon.stats_endpoint)
                if not subscriber.poll(10_000):
                    raise RuntimeError("no statistics within 10 s")
            return measure(daemon, calls, subscriber)
        finally:
            if subscriber is not None:
                subscriber.close()
            context.term()
            daemon.stop()


def measure(
    daemon: StatsDaemon, calls: int, subscriber: zmq.Socket[Any] | None
) -> dict[str, Any]:
    helper = daemon.helper_pid()
    cpu_before = procfs.cpu_seconds(daemon.pid)
    helper_before = procfs.cpu_seconds(helper) if helper else 0.0
    started = time.monotonic()
    latencies = []
    received = 0
    for _ in range(calls):
        begin = time.perf_counter()
        daemon.ping(timeout=10)
        latencies.append((time.perf_counter() - begin) * 1000)
        time.sleep(0.002)
        while subscriber is not None and subscriber.poll(0):
            subscriber.recv_multipart()
            received += 1
    span = time.monotonic() - started
    result: dict[str, Any] = {
        "latency_ms": latencies,
        "seconds": span,
        "daemon_cpu_ms_per_s": (procfs.cpu_seconds(daemon.pid) - cpu_before)
        * 1000
        / span,
        "helper_cpu_ms_per_s": (procfs.cpu_seconds(helper) - helper_before)
        * 1000
        / span
        if helper
        else None,
        "messages": received,
    }
    result.update(stats_command(daemon))
    return result


def stats_command(daemon: StatsDaemon) -> dict[str, Any]:
    """The stats command for everything, timed, with status pings beside it."""
    during: list[float] = []
    done = threading.Event()

    def ping_meanwhile() -> None:
        client = CircusClient(daemon.endpoint)
        try:
            while not done.is_set():
                begin = time.perf_counter()
                client.call("status", 10)
                during.append((time.perf_counter() - begin) * 1000)
                time.sleep(0.002)
        finally:
            client.close()

    pinger = threading.Thread(target=ping_meanwhile)
    pinger.start()
    client = CircusClient(daemon.endpoint)
    try:
        begin = time.perf_counter()
        reply = client.call("stats", 120)
        took = time.perf_counter() - begin
    finally:
        done.set()
        pinger.join()
        client.close()
    assert reply["status"] == "ok", reply
    return {"stats_command_s": took, "status_during_stats_ms": during}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=500)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for number in range(args.rounds):
        order = MODES[number % 3 :] + MODES[: number % 3]
        for mode in order:
            print(f"round {number + 1}: {mode}", flush=True)
            runs[mode].append(one_run(mode, args.processes, args.calls))

    print(
        f"\nstatus round trip with {args.processes} processes, ms "
        f"({args.rounds} rounds x {args.calls} calls)"
    )
    header = (
        f"{'mode':<11}{'median':>8}{'p90':>8}{'p99':>8}{'max':>8}"
        f"{'circusd cpu':>13}{'stats cpu':>11}{'stats cmd':>11}{'status during':>15}"
    )
    print(header)
    for mode, results in runs.items():
        pooled = [x for r in results for x in r["latency_ms"]]
        during = [x for r in results for x in r["status_during_stats_ms"]]
        helper = [
            r["helper_cpu_ms_per_s"]
            for r in results
            if r["helper_cpu_ms_per_s"] is not None
        ]
        print(
            f"{mode:<11}{statistics.median(pooled):>8.2f}"
            f"{percentile(pooled, 0.9):>8.2f}{percentile(pooled, 0.99):>8.2f}"
            f"{max(pooled):>8.2f}"
            f"{statistics.median(r['daemon_cpu_ms_per_s'] for r in results):>10.1f}ms/s"
            + (f"{statistics.median(helper):>8.1f}ms/s" if helper else f"{'-':>11}")
            + f"{statistics.median(r['stats_command_s'] for r in results):>10.2f}s"
            + f"{statistics.median(during):>8.2f} max {max(during):.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
