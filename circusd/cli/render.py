"""Readable text for circusctl: aligned tables, ``key = value`` lists, events.

Pure functions from reply data to lines; nothing here prints or talks to the
daemon.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from circusd.client import Event

_LIFECYCLE_KEYS = ("stopped", "started", "kept")


def text(value: Any) -> str:
    """A value as one cell: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return json.dumps(value, sort_keys=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    cells = [list(headers)] + [[text(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]


def pairs(mapping: Mapping[str, Any]) -> list[str]:
    """``key = value`` lines, sorted by key, with the ``=`` signs aligned."""
    if not mapping:
        return []
    width = max(len(str(key)) for key in mapping)
    return [
        f"{str(key).ljust(width)} = {text(mapping[key])}" for key in sorted(mapping)
    ]


def lifecycle(reply: Mapping[str, Any]) -> list[str]:
    """``ok``, or the stopped/started/kept pids of a waited-for command."""
    info = reply.get("info")
    source = info if isinstance(info, Mapping) else reply
    lines = []
    for key in _LIFECYCLE_KEYS:
        pids = source.get(key)
        if isinstance(pids, list):
            lines.append(f"{key}: {' '.join(map(str, pids)) or '-'}")
    return lines or ["ok"]


def status_rows(
    statuses: Mapping[str, Any],
    counts: Mapping[str, int | None],
    reasons: Mapping[str, Any],
) -> list[str]:
    rows = [
        (name, statuses[name], counts.get(name), reasons.get(name, ""))
        for name in sorted(statuses, key=str.lower)
    ]
    return table(("WATCHER", "STATUS", "PROCESSES", "REASON"), rows)


def single_status(name: str, reply: Mapping[str, Any]) -> str:
    """The status word, then why the watcher failed if the reply says so."""
    status = text(reply.get("status"))
    reason = reply.get("reason")
    if not isinstance(reason, str) or not reason:
        reason = find_reason(reply.get("reasons"), name)
    return f"{status} ({reason})" if reason else status


def find_reason(reasons: Any, name: str) -> str:
    if not isinstance(reasons, Mapping):
        return ""
    for key, value in reasons.items():
        if str(key).lower() == name.lower():
            return text(value)
    return ""


def process_info(info: Mapping[str, Any]) -> list[str]:
    """``key = value`` lines of one process; children are listed by pid."""
    shown = dict(info)
    children = shown.get("children")
    if isinstance(children, list):
        shown["children"] = " ".join(
            str(child.get("pid")) if isinstance(child, Mapping) else text(child)
            for child in children
        )
    return pairs(shown)


def sockets(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = []
    for entry in entries:
        if entry.get("path"):
            address = str(entry["path"])
        else:
            host = str(entry.get("host", ""))
            host = f"[{host}]" if ":" in host else host
            address = f"{host}:{entry.get('port', '')}"
        rows.append((entry.get("name"), entry.get("fd"), address, entry.get("backlog")))
    return table(("NAME", "FD", "ADDRESS", "BACKLOG"), rows)


_STATS_HEADERS = ("WATCHER", "PID", "WID", "CPU%", "MEM%", "RSS", "VMS", "AGE", "CMD")


def stats(per_watcher: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Rows for ``{watcher: {pid: info}}``; a process's children are indented."""
    rows: list[Sequence[Any]] = []
    for watcher in sorted(per_watcher, key=str.lower):
        processes = per_watcher[watcher]
        for pid in sorted(processes, key=_pid_order):
            rows.extend(_process_rows(watcher, pid, processes[pid], depth=0))
    return table(_STATS_HEADERS, rows)


def _pid_order(pid: str) -> tuple[int, str]:
    return (int(pid), "") if str(pid).isdigit() else (0, str(pid))


def _process_rows(watcher: str, pid: Any, info: Any, depth: int) -> list[Sequence[Any]]:
    indent = "  " * depth
    if not isinstance(info, Mapping):
        return [(watcher, f"{indent}{pid}", "", "", "", "", "", "", text(info))]
    row = (
        watcher,
        f"{indent}{info.get('pid', pid)}",
        info.get("wid", ""),
        info.get("cpu", ""),
        info.get("mem", ""),
        info.get("mem_info1", ""),
        info.get("mem_info2", ""),
        duration(info.get("age")),
        info.get("cmdline", ""),
    )
    rows: list[Sequence[Any]] = [row]
    for child in info.get("children") or []:
        if isinstance(child, Mapping):
            rows.extend(_process_rows(watcher, child.get("pid"), child, depth + 1))
    return rows


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return text(seconds) if seconds is not None else ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def event_line(event: Event) -> str:
    """``2026-01-02 03:04:05 watcher.web.spawn process_pid=42``."""
    data = dict(event.data)
    stamp = data.pop("time", None)
    when = ""
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        moment = datetime.datetime.fromtimestamp(stamp)
        when = moment.strftime("%Y-%m-%d %H:%M:%S") + " "
    fields = " ".join(f"{key}={text(data[key])}" for key in sorted(data))
    return f"{when}{event.topic} {fields}".rstrip()
