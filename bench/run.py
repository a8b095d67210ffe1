#!/usr/bin/env python3
"""Measure circusd, Circus 0.19 and supervisor 4.3 side by side.

Usage: bench/run.py [--only respawn,start,status,idle] [--n N]
                    [--daemons circusd,circus,supervisor]

Each daemon runs in a temporary directory of its own, with control sockets
there and children that are `sleep 600`. Prints a table (with how many times
slower or bigger each peer is than the first daemon listed) and writes every
number and raw sample to bench/results/<time>.json. A daemon that fails a
scenario gets "error" in its cell and the reason below the table; the run
goes on with the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scenarios
from daemons import CircusDaemon, Daemon, SupervisorDaemon

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DAEMONS: dict[str, tuple[type[Daemon], str, Path]] = {
    "circusd": (CircusDaemon, "CIRCUSD_BIN", REPO / ".venv/bin/circusd"),
    "circus": (CircusDaemon, "CIRCUS_PEER_BIN", REPO / ".peers/circus/bin/circusd"),
    "supervisor": (
        SupervisorDaemon,
        "SUPERVISORD_BIN",
        REPO / ".peers/supervisor/bin/supervisord",
    ),
}
SCENARIOS = ("respawn", "start", "status", "idle")
BASELINE = "popen-loop"

# (scenario, label, path into the scenario's result); lower is better for all.
ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("respawn", "respawn after kill -9, median (ms)", ("latency_ms", "median")),
    ("respawn", "respawn after kill -9, p90 (ms)", ("latency_ms", "p90")),
    ("respawn", "respawn: spawn event, median (ms)", ("event_latency_ms", "median")),
    ("start", "start N processes (s)", ("seconds",)),
    ("status", "status round trip, median (ms)", ("latency_ms", "median")),
    ("status", "status round trip, p90 (ms)", ("latency_ms", "p90")),
    ("idle", "idle CPU, % of one core", ("cpu_percent",)),
    ("idle", "idle wakeups per second", ("wakeups_per_s",)),
    ("idle", "idle RSS (MiB)", ("rss_mib",)),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--daemons", default=",".join(DAEMONS), help="comma-separated, in order"
    )
    parser.add_argument(
        "--n",
        type=int,
        help="size of each scenario: kills for respawn (default 20), "
        "processes for start, status and idle (default 500)",
    )
    parser.add_argument("--rounds", type=int, default=200, help="status calls")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=6.0,
        help="respawn: seconds the children run before the first kill, so a "
        "kill is not taken for a crash loop (default 6)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=5.0,
        help="respawn: longest random pause before a kill (default 5)",
    )
    parser.add_argument("--keep", action="store_true", help="keep daemon dirs")
    args = parser.parse_args(argv)
    args.only = _choices(parser, "--only", args.only, SCENARIOS)
    args.daemons = _choices(parser, "--daemons", args.daemons, tuple(DAEMONS))
    return args


def _choices(
    parser: argparse.ArgumentParser, flag: str, value: str, allowed: tuple[str, ...]
) -> list[str]:
    chosen = [word.strip() for word in value.split(",") if word.strip()]
    unknown = [word for word in chosen if word not in allowed]
    if unknown or not chosen:
        parser.error(f"{flag}: expected some of {','.join(allowed)}, got {value!r}")
    return chosen


def make_daemon(name: str, directory: Path) -> Daemon:
    cls, variable, default = DAEMONS[name]
    return cls(name, Path(os.environ.get(variable, default)), directory)


def run_one(name: str, work: Path, measure: Callable[[Daemon], Any]) -> Any:
    """Run `measure` on a fresh daemon; always stop it, whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    daemon = make_daemon(name, directory)
    try:
        return measure(daemon)
    finally:
        daemon.stop()


def error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def run(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """results[daemon][scenario] = numbers, or {"error": text}."""
    results: dict[str, dict[str, Any]] = {name: {} for name in args.daemons}
    fleet_scenarios = [s for s in args.only if s != "respawn"]
    samples = args.n or 20
    processes = args.n or 500

    def measure_respawn(daemon: Daemon) -> dict[str, Any]:
        return scenarios.respawn(daemon, samples, args.settle, args.pause)

    def measure_fleet(daemon: Daemon) -> dict[str, dict[str, Any]]:
        return scenarios.fleet(
            daemon, processes, fleet_scenarios, args.rounds, args.idle_seconds
        )

    if "start" in args.only:
        say(f"{BASELINE}: start {processes}")
        results[BASELINE] = {"start": scenarios.popen_loop(processes)}

    for name in args.daemons:
        if "respawn" in args.only:
            say(f"{name}: respawn x{samples}")
            try:
                results[name]["respawn"] = run_one(name, work, measure_respawn)
            except Exception as error:
                results[name]["respawn"] = {"error": error_text(error)}
        if fleet_scenarios:
            say(f"{name}: {'+'.join(fleet_scenarios)} with {processes} processes")
            try:
                results[name].update(run_one(name, work, measure_fleet))
            except Exception as error:
                for scenario in fleet_scenarios:
                    results[name].setdefault(scenario, {"error": error_text(error)})
    return results


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def lookup(result: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    columns = list(args.daemons)
    if BASELINE in results:
        columns.append(BASELINE)
    reference = args.daemons[0]
    peers = args.daemons[1:]
    header = ["metric", *columns, *(f"{p}/{reference}" for p in peers)]
    rows = [header]
    errors: dict[tuple[str, str], list[str]] = {}
    for scenario, label, path in ROWS:
        if scenario not in args.only:
            continue
        cells = [label]
        values: dict[str, float | None] = {}
        for name in columns:
            result = results.get(name, {}).get(scenario)
            if result is None:
                cells.append("-")
                continue
            if "error" in result:
                cells.append("error")
                scenarios_failed = errors.setdefault((name, result["error"]), [])
                if scenario not in scenarios_failed:
                    scenarios_failed.append(scenario)
                continue
            value = lookup(result, path)
            values[name] = value
            cells.append(number(value))
        for peer in peers:
            cells.append(ratio(values.get(peer), values.get(reference)))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    sizes = []
    if "respawn" in args.only:
        sizes.append(f"{args.n or 20} kills for respawn")
    if set(args.only) - {"respawn"}:
        sizes.append(f"{args.n or 500} processes for start, status and idle")
    lines.append(f"\n{'; '.join(sizes)}.")
    lines.append(f"Ratios above 1 mean {reference} is faster or smaller.")
    for (name, error), failed in errors.items():
        lines.append(f"error: {name} ({', '.join(failed)}): {error}")
    return "\n".join(lines)


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(theirs: float | None, ours: float | None) -> str:
    if theirs is None or ours is None:
        return "-"
    if ours == 0:
        return "1.00x" if theirs == 0 else "inf"
    return f"{number(theirs / ours)}x"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "kernel": platform.release()}
    for name in ("circusd", "circus", "supervisor"):
        cls, variable, default = DAEMONS[name]
        binary = Path(os.environ.get(variable, default))
        found[name] = str(binary)
    return found


def raise_fd_limit() -> None:
    # 500 children with pipes need more than the usual 1024 fds; every daemon
    # inherits the same limit from the harness.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="circusd-bench-"))
    started = time.time()
    try:
        results = run(args, work)
    finally:
        if args.keep:
            say(f"daemon directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results, args))

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / time.strftime("%Y%m%d-%H%M%S.json", time.localtime(started))
    document = {
        "started": started,
        "seconds": time.time() - started,
        "args": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), **versions()},
        "results": results,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
