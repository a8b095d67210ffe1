"""From the raw results of every round to the table of medians and ratios.

Samples (respawn latencies, status round trips, CLI runs) are pooled over the
rounds; a single figure per round (a start time, an RSS) becomes the median
of the rounds. A daemon whose every round failed a scenario shows "error";
one that failed some rounds shows the figure of the others with a "*".
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Any

from daemons import FLOOR


@dataclass(frozen=True)
class Row:
    label: str
    cell: str  # "scenario.size"
    field: str
    stat: str = "median"  # or "p90"
    ratio: bool = True  # False where a ratio means nothing (bytes lost)


# What the floor column is, scenario by scenario.
FLOORS = {
    "respawn": "bench/floor.py: a thread blocked in os.wait() Popens a replacement",
    "start": "bench/floor.py: a bare Popen loop",
    "status": "a bare pyzmq DEALER/ROUTER round trip (bench/floor.py answers)",
    "cli": "bench/floor_ctl.py: Python starts, imports pyzmq, one round trip",
    "rss": "bench/floor.py: Python with pyzmq, a thread and N children",
    "stop": "bench/floor.py: SIGTERM to every child, wait for all",
    "output": "`yes | head -c N | cat > file`; CPU is cat's",
}

# The `ssh` rows of one endpoint kind: (label, field, stat). Times in ms.
SSH_ROWS = (
    ("SSH login alone (TCP, kex, host key, auth), median", "login_ms", "median"),
    ("channel open (+ local bridge, if any), median", "channel_ms", "median"),
    ("first request, ZeroMQ handshake included, median", "first_ms", "median"),
    ("later request, median", "second_ms", "median"),
    ("tunnelled status after the login, median", "tunnel_ms", "median"),
    ("direct: connect, median", "direct_connect_ms", "median"),
    ("direct: first request, median", "direct_first_ms", "median"),
    ("direct: later request, median", "direct_second_ms", "median"),
    ("direct status, median", "direct_ms", "median"),
    ("added beyond the login, median", "added_ms", "median"),
    ("added beyond the login, p90", "added_ms", "p90"),
    ("sshd's set-up after the login, median", "post_auth_ms", "median"),
    ("added beyond login and sshd's set-up, median", "added_after_ready_ms", "median"),
    ("client CPU, tunnelled status after the login, median", "cpu_ms", "median"),
    ("client CPU, direct status, median", "direct_cpu_ms", "median"),
    ("closing the session, median", "close_ms", "median"),
    ("whole circusctl status over SSH, median", "cli_ssh_ms", "median"),
    ("whole circusctl status direct, median", "cli_direct_ms", "median"),
)


def rows(args: argparse.Namespace) -> list[Row]:
    only = set(args.only)
    found: list[Row] = []
    if "respawn" in only:
        cell = f"respawn.{args.kills}"
        found += [
            Row("respawn after kill -9, median (ms)", cell, "latency_ms"),
            Row("respawn after kill -9, p90 (ms)", cell, "latency_ms", "p90"),
            Row("respawn: spawn event, median (ms)", cell, "event_ms"),
        ]
    for scenario, who in (("start", ""), ("start_as", " as nobody, gid, nofile")):
        if scenario in only:
            for n in (n for n in args.start_sizes if n > 0):
                cell = f"{scenario}.{n}"
                found += [
                    Row(f"start {n} processes{who} (s)", cell, "seconds"),
                    Row(f"start {n} processes{who}: daemon CPU (s)", cell, "cpu_s"),
                ]
    if "status" in only:
        for n in (n for n in args.status_sizes if n > 0):
            found.append(
                Row(
                    f"status round trip, {n} procs, median (ms)",
                    f"status.{n}",
                    "latency_ms",
                )
            )
            found.append(
                Row(
                    f"status round trip, {n} procs, p90 (ms)",
                    f"status.{n}",
                    "latency_ms",
                    "p90",
                )
            )
    if "cli" in only:
        found += [
            Row(f"CLI status, whole process, {n} procs (ms)", f"cli.{n}", "latency_ms")
            for n in args.status_sizes
            if n > 0
        ]
    if "idle" in only:
        label = f"idle {args.idle_seconds:g} s, {args.fleet} procs"
        found += [
            Row(f"{label}: CPU (s)", f"idle.{args.fleet}", "cpu_s"),
            Row(f"{label}: context switches", f"idle.{args.fleet}", "switches"),
        ]
    if "rss" in only:
        found += [
            Row(f"RSS with {n} processes (MiB)", f"rss.{n}", "mib")
            for n in args.rss_sizes
        ]
    if "output" in only:
        cell = f"output.{args.output_mb}"
        label = f"{args.output_mb} MB output to a file"
        found += [
            Row(f"{label}: time (s)", cell, "seconds"),
            Row(f"{label}: bytes lost", cell, "lost_bytes", ratio=False),
            Row(f"{label}: daemon CPU (s)", cell, "cpu_s"),
        ]
    if "stop" in only:
        found.append(
            Row(
                f"graceful stop of {args.fleet} processes (s)",
                f"stop.{args.fleet}",
                "seconds",
            )
        )
    if "reload" in only:
        cell = f"reload.{args.watchers}"
        label = f"reload, {args.watchers} watchers, 1 changed"
        found += [
            Row(f"{label}: command (s)", cell, "command_s"),
            Row(f"{label}: new process up (s)", cell, "up_s"),
            Row(f"{label}: others restarted", cell, "unchanged_replaced", ratio=False),
        ]
    if "ssh" in only:
        for kind in ("ipc", "tcp"):
            cell = f"ssh.{kind}"
            found += [
                Row(f"ssh {kind}: {label} (ms)", cell, field, stat)
                for label, field, stat in SSH_ROWS
            ]
            label = f"ssh {kind}: samples left out (the daemon refused)"
            found.append(Row(label, cell, "failed", ratio=False))
    return found


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _figure(
    per_round: list[dict[str, Any]], row: Row
) -> tuple[float | str | None, list[str]]:
    """(the figure, or "error", or None for nothing; errors of failed rounds)."""
    errors = [r["error"] for r in per_round if "error" in r]
    good = [r[row.field] for r in per_round if "error" not in r and row.field in r]
    if not good:
        return ("error" if errors else None), errors
    if isinstance(good[0], list):
        pooled = [x for samples in good for x in samples]
        if not pooled:
            return None, errors
    else:
        pooled = good
    value = percentile(pooled, 0.9) if row.stat == "p90" else statistics.median(pooled)
    return value, errors


def summarise(
    rounds: list[dict[str, dict[str, dict[str, Any]]]],
    args: argparse.Namespace,
    names: list[str],
) -> dict[str, Any]:
    """The figure of every row for every daemon, and every error met."""
    table_rows = []
    for row in rows(args):
        values: dict[str, Any] = {}
        failed: dict[str, int] = {}
        for name in names:
            per_round = [
                r[name][row.cell] for r in rounds if row.cell in r.get(name, {})
            ]
            value, row_errors = _figure(per_round, row)
            values[name] = value
            if row_errors:
                failed[name] = len(row_errors)
        table_rows.append(
            {
                "label": row.label,
                "cell": row.cell,
                "field": row.field,
                "stat": row.stat,
                "ratio": row.ratio,
                "values": values,
                "failed_rounds": failed,
            }
        )
    errors: dict[tuple[str, str, str], int] = {}
    skipped: dict[tuple[str, str], str] = {}
    for results in rounds:
        for name, cells in results.items():
            for cell, result in cells.items():
                if "error" in result:
                    key = (name, cell.split(".")[0], result["error"])
                    errors[key] = errors.get(key, 0) + 1
                if "skipped" in result:
                    skipped[(name, cell.split(".")[0])] = result["skipped"]
    return {
        "rows": table_rows,
        "errors": [
            {"daemon": name, "scenario": scenario, "error": text, "count": count}
            for (name, scenario, text), count in errors.items()
        ],
        "skipped": [
            {"daemon": name, "scenario": scenario, "reason": reason}
            for (name, scenario), reason in skipped.items()
        ],
    }


def number(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(theirs: Any, ours: Any) -> str:
    if not isinstance(theirs, int | float) or not isinstance(ours, int | float):
        return "-"
    if ours == 0:
        return "1.00x" if theirs == 0 else "inf"
    return f"{number(theirs / ours)}x"


def table(
    summary: dict[str, Any],
    args: argparse.Namespace,
    names: list[str],
    about: dict[str, Any],
) -> str:
    reference = args.daemons[0]
    peers = [name for name in args.daemons[1:]]
    floor = FLOOR in names
    header = ["metric", *names, *(f"{p}/{reference}" for p in peers)]
    if floor:
        header.append(f"{reference}/{FLOOR}")
    lines_of_cells = [header]
    for row in summary["rows"]:
        values = row["values"]
        cells = [row["label"]]
        for name in names:
            text = number(values.get(name))
            if name in row["failed_rounds"] and values.get(name) != "error":
                text += "*"
            cells.append(text)
        for peer in peers:
            cells.append(
                ratio(values[peer], values[reference]) if row["ratio"] else "-"
            )
        if floor:
            cells.append(
                ratio(values[reference], values[FLOOR]) if row["ratio"] else "-"
            )
        lines_of_cells.append(cells)

    widths = [max(len(r[i]) for r in lines_of_cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(r)
        )
        for r in lines_of_cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(
        f"{args.rounds} round(s), daemons interleaved. Lower is better everywhere. "
        f"Ratios above 1 mean {reference} is faster or smaller."
    )
    used = {row["cell"].split(".")[0] for row in summary["rows"]}
    if floor and used & FLOORS.keys():
        lines.append("floor:")
        lines += [f"  {s}: {text}" for s, text in FLOORS.items() if s in used]
    if any(
        row["values"][name] != "error"
        for row in summary["rows"]
        for name in row["failed_rounds"]
    ):
        lines.append("*: failed in some rounds; the figure is from the others.")
    for error in summary["errors"]:
        lines.append(
            f"error: {error['daemon']} ({error['scenario']}, "
            f"{error['count']} round(s)): {error['error']}"
        )
    for skip in summary["skipped"]:
        where = f"{skip['daemon']} ({skip['scenario']})"
        lines.append(f"skipped: {where}: {skip['reason']}")
    load = about.get("load", {})
    lines.append(
        f"machine: {about['nproc']} CPUs ({about['cpu_model']}), Linux "
        f"{about['kernel']}, Python {about['python']}"
    )
    lines.append(
        f"load: load average {_loads(load.get('loadavg_before'))} before, "
        f"{_loads((load.get('loadavg_after_each_round') or [None])[-1])} after; "
        f"all CPUs {load.get('busy_percent_of_all_cpus', 0):.0f} % busy during the "
        "run (the harness and the daemons included)"
    )
    versions = about.get("versions", {})
    lines.append(
        "; ".join(
            f"{name}: {about['circusd_source'] if name == 'circusd' else version}"
            for name, version in versions.items()
            if name != FLOOR
        )
    )
    return "\n".join(lines)


def _loads(values: Any) -> str:
    if not values:
        return "?"
    return "/".join(f"{v:.2f}" for v in values)
