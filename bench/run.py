#!/usr/bin/env python3
"""Measure circusd, Circus 0.19 and supervisor 4.3 side by side, with a floor.

Runs every selected scenario on every daemon, one daemon at a time and
interleaved (each round goes through the scenarios, and for each scenario
through the daemons, starting with a different daemon each round), for
--rounds rounds. Prints a table of medians, with how many times slower or
bigger each peer is than the first daemon listed and how far that daemon is
from the floor, and writes every figure and raw sample to
bench/results/<time>.json. A daemon that fails a scenario gets "error" in its
cell and the reason below the table; the run goes on with the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
import scenarios
import tunnel
from daemons import FLOOR, KINDS, Daemon, binary_of, make_daemon

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIOS = (
    "respawn",
    "start",
    "start_as",
    "status",
    "cli",
    "idle",
    "rss",
    "output",
    "stop",
    "reload",
    "ssh",
)
PEERS = tuple(name for name in KINDS if name != FLOOR)


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(word) for word in text.split(",") if word.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 10,500: {text!r}"
        ) from None
    if not sizes or min(sizes) < 0:
        raise argparse.ArgumentTypeError(f"expected sizes of 0 or more: {text!r}")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})",
    )
    add("--daemons", default=",".join(PEERS), help="comma-separated, in order")
    add("--no-floor", action="store_true", help="leave the floor out")
    add("--rounds", type=int, default=3, help="rounds of everything (default 3)")
    add("--kills", type=int, help="respawn: kills per round (10)")
    add("--start-sizes", type=_sizes, help="start: processes (100,500)")
    add("--status-sizes", type=_sizes, help="status and cli: processes (10,500)")
    add("--rss-sizes", type=_sizes, help="rss: processes (0,500,1000)")
    add("--fleet", type=int, help="idle and stop: processes (500)")
    add("--output-mb", type=int, default=200, help="output: MB written (200)")
    add("--watchers", type=int, help="reload: watchers (50)")
    add("--calls", type=int, default=200, help="status: round trips per round (200)")
    add("--cli-runs", type=int, default=5, help="cli: runs per round (5)")
    add(
        "--ssh-samples",
        type=int,
        default=100,
        help="ssh: tunnelled and direct status samples per round and endpoint "
        "(default 100; the whole circusctl process runs --cli-runs times)",
    )
    add("--idle-seconds", type=float, default=30.0, help="idle: seconds (30)")
    add(
        "--settle",
        type=float,
        default=6.0,
        help="respawn: seconds the children run before the first kill, so a "
        "kill is not taken for a crash loop (default 6)",
    )
    add(
        "--pause",
        type=float,
        default=5.0,
        help="respawn: longest random pause before a kill (default 5)",
    )
    add(
        "--rest",
        type=float,
        default=2.0,
        help="seconds to wait after the last child is up before measuring, and "
        "after a reload before counting what it replaced (default 2)",
    )
    add(
        "--n",
        type=int,
        help="shortcut for a quick run: every process count not given "
        "otherwise becomes N (kills, start, status, rss 0 and N, fleet, watchers)",
    )
    add(
        "--circusd-ref",
        metavar="REF",
        help="benchmark circusd as committed at REF (git archive), not the "
        "working tree that .venv/bin/circusd runs",
    )
    add("--out", type=Path, default=HERE / "results", help="where the JSON goes")
    add("--keep", action="store_true", help="keep the daemons' directories")
    args = parser.parse_args(argv)
    args.only = _choices(parser, "--only", args.only, SCENARIOS)
    args.daemons = _choices(parser, "--daemons", args.daemons, PEERS)
    n = args.n
    defaults = {
        "kills": n or 10,
        "start_sizes": [n] if n else [100, 500],
        "status_sizes": [n] if n else [10, 500],
        "rss_sizes": sorted({0, n}) if n else [0, 500, 1000],
        "fleet": n or 500,
        "watchers": n or 50,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.rounds, args.kills, args.fleet, args.watchers, args.ssh_samples) < 1:
        parser.error(
            "--rounds, --kills, --fleet, --watchers, --ssh-samples and --n must be "
            "1 or more"
        )
    return args


def _choices(
    parser: argparse.ArgumentParser, flag: str, value: str, allowed: tuple[str, ...]
) -> list[str]:
    chosen = [word.strip() for word in value.split(",") if word.strip()]
    unknown = [word for word in chosen if word not in allowed]
    if unknown or not chosen:
        parser.error(f"{flag}: expected some of {','.join(allowed)}, got {value!r}")
    return chosen


# -- the plan: groups of scenarios that share one daemon run ------------------


@dataclass(frozen=True)
class Group:
    """One daemon run: what it measures, and how."""

    title: str
    cells: tuple[str, ...]  # what it produces, "scenario.size"
    measure: Callable[[Daemon], scenarios.Cells]
    floor: Callable[[Path], scenarios.Cells] | None = None  # replaces measure
    daemons: tuple[str, ...] | None = None  # only these take part; None: all

    def cells_for(self, kind: type[Daemon]) -> list[str]:
        if kind.kind == FLOOR and self.floor is not None:
            return list(self.cells)
        return [c for c in self.cells if kind.takes_part(c.split(".")[0])]


def plan(args: argparse.Namespace) -> list[Group]:
    only = set(args.only)
    groups: list[Group] = []
    if "respawn" in only:
        groups.append(
            Group(
                f"respawn x{args.kills}",
                (f"respawn.{args.kills}",),
                lambda d: scenarios.respawn(d, args.kills, args.settle, args.pause),
            )
        )
    by_size: dict[int, set[str]] = {}
    for scenario, sizes in (
        ("start", args.start_sizes),
        ("status", args.status_sizes),
        ("cli", args.status_sizes),
        ("rss", args.rss_sizes),
        ("idle", [args.fleet]),
        ("stop", [args.fleet]),
    ):
        if scenario in only:
            for size in sizes:
                if size > 0 or scenario == "rss":
                    by_size.setdefault(size, set()).add(scenario)
    options = scenarios.Sizes(args.calls, args.cli_runs, args.idle_seconds, args.rest)
    for size, which in sorted(by_size.items()):
        ordered = [s for s in SCENARIOS if s in which]
        groups.append(
            Group(
                f"{'+'.join(ordered)} with {size} processes",
                tuple(f"{s}.{size}" for s in ordered),
                _fleet_measure(size, ordered, options),
            )
        )
    if "start_as" in only:
        for size in (n for n in args.start_sizes if n > 0):
            groups.append(
                Group(
                    f"start_as with {size} processes",
                    (f"start_as.{size}",),
                    _start_as(size),
                )
            )
    if "output" in only:
        mb = args.output_mb
        groups.append(
            Group(
                f"output {mb} MB",
                (f"output.{mb}",),
                lambda d: scenarios.output(d, mb),
                floor=lambda directory: scenarios.output_floor(directory, mb),
            )
        )
    if "reload" in only:
        groups.append(
            Group(
                f"reload with {args.watchers} watchers",
                (f"reload.{args.watchers}",),
                lambda d: scenarios.reload(d, args.watchers, args.rest),
            )
        )
    if "ssh" in only:
        groups += [
            Group(
                f"status over ssh, {kind} endpoint",
                (f"ssh.{kind}",),
                _tunnel(kind, args.ssh_samples, args.cli_runs),
                daemons=("circusd",),
            )
            for kind in tunnel.KINDS
        ]
    return groups


def _tunnel(kind: str, samples: int, runs: int) -> Callable[[Daemon], scenarios.Cells]:
    return lambda daemon: tunnel.measure(daemon, kind, samples, runs)


def _start_as(size: int) -> Callable[[Daemon], scenarios.Cells]:
    return lambda daemon: scenarios.start_as(daemon, size)


def _fleet_measure(
    size: int, which: list[str], options: scenarios.Sizes
) -> Callable[[Daemon], scenarios.Cells]:
    return lambda daemon: scenarios.fleet(daemon, size, which, options)


# -- running ------------------------------------------------------------------

# rounds[r][daemon][cell] = {field: value or samples} or {"error": text}
Rounds = list[dict[str, dict[str, dict[str, Any]]]]


def run_group(name: str, group: Group, work: Path) -> scenarios.Cells:
    """One fresh daemon for one group; always stopped, whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    daemon = make_daemon(name, directory)
    expected = group.cells_for(type(daemon))
    cells: scenarios.Cells = {}
    try:
        if daemon.kind == FLOOR and group.floor is not None:
            cells = group.floor(directory)
        else:
            cells = group.measure(daemon)
    except Exception as error:
        text = scenarios.error_text(error)
        cells = {cell: cells.get(cell, {"error": text}) for cell in expected}
    finally:
        try:
            daemon.stop()
        except Exception as error:  # the figures stand; say what went wrong
            say(f"{name}: stopping failed: {scenarios.error_text(error)}")
    for cell in expected:
        cells.setdefault(cell, {"error": "no figure (the run ended early)"})
    return cells


def run(args: argparse.Namespace, work: Path) -> tuple[Rounds, list[list[float]]]:
    names = list(args.daemons) + ([] if args.no_floor else [FLOOR])
    groups = plan(args)
    rounds: Rounds = []
    loads: list[list[float]] = []
    for number in range(args.rounds):
        results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
        order = names[number % len(names) :] + names[: number % len(names)]
        for group in groups:
            for name in order:
                if not group.cells_for(KINDS[name][0]):
                    continue
                if group.daemons is not None and name not in group.daemons:
                    continue
                say(f"round {number + 1}/{args.rounds}: {name}: {group.title}")
                results[name].update(run_group(name, group, work))
        rounds.append(results)
        loads.append(list(load_average()))
    return rounds, loads


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------


def load_average() -> tuple[float, float, float]:
    with open("/proc/loadavg", encoding="ascii") as file:
        one, five, fifteen = (float(word) for word in file.read().split()[:3])
    return one, five, fifteen


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as file:
        fields = [int(word) for word in file.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version_of(name: str) -> str:
    binary = binary_of(name)
    if name == FLOOR:
        return f"python {platform.python_version()}"
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({scenarios.error_text(error)})"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[-1] if text else "unknown"


def machine(names: list[str]) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "binaries": {name: str(binary_of(name)) for name in names},
        "versions": {name: version_of(name) for name in names},
    }


def git(*argv: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def export_circusd(ref: str, work: Path) -> Path:
    """circusd as committed at `ref`, with circusd and circusctl launchers."""
    root = work / "circusd-src"
    root.mkdir()
    compiled = git("ls-tree", "--name-only", ref, "setup.py") == "setup.py"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "circusd"]
        + (["setup.py"] if compiled else []),
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(
        ["tar", "-x", "-C", str(root)], input=archive.stdout, check=True, timeout=60
    )
    if compiled:  # circusd._spawn, a C extension
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=300,
        )
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, module in (
        ("circusd", "circusd.cli.daemon"),
        ("circusctl", "circusd.cli.circusctl"),
    ):
        launcher = bin_dir / name
        launcher.write_text(
            f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} -m {module} "$@"\n'
        )
        launcher.chmod(0o755)
    return bin_dir / "circusd"


def raise_fd_limit() -> None:
    # 1000 children with pipes need more than the usual 1024 fds; every daemon
    # inherits the same limit from the harness.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    names = list(args.daemons) + ([] if args.no_floor else [FLOOR])
    work = Path(tempfile.mkdtemp(prefix="circusd-bench-"))
    if args.circusd_ref:
        commit = git("rev-parse", "--verify", f"{args.circusd_ref}^{{commit}}")
        if commit == "unknown":
            shutil.rmtree(work, ignore_errors=True)
            sys.exit(f"run.py: --circusd-ref: no commit {args.circusd_ref!r} in {REPO}")
        os.environ["CIRCUSD_BIN"] = str(export_circusd(commit, work))
        os.environ["CIRCUSD_PYTHONPATH"] = str(work / "circusd-src")  # ssh_probe
        source = f"commit {commit}"
    else:
        dirty = git("status", "--porcelain", "--", "circusd")
        source = f"working tree at {git('rev-parse', 'HEAD')}" + (
            " with uncommitted changes under circusd/" if dirty else ""
        )
    about = machine(names)
    about["circusd_source"] = source
    started = time.time()
    load_before = load_average()
    busy_before = busy_jiffies()
    try:
        rounds, loads = run(args, work)
    finally:
        if args.keep:
            say(f"daemon directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    busy_after = busy_jiffies()
    about["load"] = {
        "loadavg_before": load_before,
        "loadavg_after_each_round": loads,
        "busy_percent_of_all_cpus": 100
        * (busy_after[0] - busy_before[0])
        / max(1, busy_after[1] - busy_before[1]),
    }

    summary = report.summarise(rounds, args, names)
    text = report.table(summary, args, names, about)
    print(text)

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / time.strftime("%Y%m%d-%H%M%S.json", time.localtime(started))
    document = {
        "started": started,
        "seconds": time.time() - started,
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "machine": about,
        "summary": summary,
        "table": text,
        "rounds": rounds,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
