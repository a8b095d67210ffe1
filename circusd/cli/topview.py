"""What ``circusctl top`` shows: the stats stream folded into a table.

Pure: messages go in (``add``), lines come out (``frame``); nothing here
touches the terminal or the network. A process not heard of for
``STALE_AFTER`` seconds is dropped, as circus-top does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from circusd.cli.render import duration
from circusd.stats import human_bytes

STALE_AFTER = 3.0
SORTS = ("cpu", "mem", "age", "pid")
SORT_KEYS = {"c": "cpu", "m": "mem", "a": "age", "p": "pid"}
HELP = "c cpu  m memory  a age  p pid  r reverse  q quit"
_UNITS = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# Circus's pseudo-watchers: circusd's own processes, and the sockets.
CIRCUS, SOCKETS = "circus", "sockets"


@dataclass
class Row:
    pid: int
    cpu: float
    mem: float  # % of RAM
    rss: int  # bytes
    age: float  # seconds
    user: str
    command: str
    seen: float  # monotonic time of the last message

    def key(self, sort: str) -> float:
        return float(getattr(self, "rss" if sort == "mem" else sort))


def size_bytes(text: Any) -> int:
    """``"8.1M"`` (the stats fields' form) as bytes; 0 if unreadable."""
    if not isinstance(text, str) or not text or text[-1] not in _UNITS:
        return 0
    try:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    except ValueError:
        return 0


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


class TopView:
    def __init__(self) -> None:
        self.processes: dict[str, dict[int, Row]] = {}
        # fd -> (address, reads in the last second, when heard of)
        self.sockets: dict[str, tuple[str, int, float]] = {}
        self.last_message: float | None = None

    def add(self, topic: str, data: Mapping[str, Any], now: float) -> None:
        """One message of the stream (topic ``stat.NAME[.SUB]``)."""
        parts = topic.split(".")
        if len(parts) != 3 or parts[0] != "stat":
            return  # the aggregates: computed here from the processes
        self.last_message = now
        _, name, sub = parts
        if name == SOCKETS:
            self.sockets[sub] = (
                str(data.get("address", "")),
                int(_number(data.get("reads"))),
                now,
            )
            return
        if not sub.isdigit():
            return
        label = data.get("name")
        command = str(data.get("cmdline", ""))
        if isinstance(label, str) and label:
            command = label
        self.processes.setdefault(name, {})[int(sub)] = Row(
            pid=int(sub),
            cpu=_number(data.get("cpu")),
            mem=_number(data.get("mem")),
            rss=size_bytes(data.get("mem_info1")),
            age=_number(data.get("age")),
            user=str(data.get("username", "")),
            command=command,
            seen=now,
        )

    def expire(self, now: float) -> None:
        for name, rows in list(self.processes.items()):
            for pid in [
                pid for pid, row in rows.items() if now - row.seen > STALE_AFTER
            ]:
                del rows[pid]
            if not rows:
                del self.processes[name]
        for fd in [
            fd for fd, entry in self.sockets.items() if now - entry[2] > STALE_AFTER
        ]:
            del self.sockets[fd]

    # -- output ------------------------------------------------------------------

    def watcher_names(self, statuses: Mapping[str, str]) -> list[str]:
        names = {name.lower(): name for name in statuses}
        for name in self.processes:
            names.setdefault(name, name)
        return [names[key] for key in sorted(names) if key != CIRCUS] + (
            [CIRCUS] if CIRCUS in self.processes else []
        )

    def frame(
        self,
        statuses: Mapping[str, str],
        sort: str = "cpu",
        reverse: bool = False,
        width: int = 100,
        height: int = 0,
        title: str = "",
    ) -> list[str]:
        """The screen: title, header, a line per watcher then per process;
        ``height`` 0 means no limit."""
        lines = [*heading(title, sort, reverse), ""]
        return fit([*lines, *self.table(statuses, sort, reverse)], width, height)

    def table(
        self, statuses: Mapping[str, str], sort: str = "cpu", reverse: bool = False
    ) -> list[str]:
        """The column headers, a line per watcher then per process, and the
        sockets: the screen without its title."""
        lines = [
            _line(
                "WATCHER/PID", "STATUS", "CPU%", "MEM%", "RSS", "AGE", "USER", "COMMAND"
            )
        ]
        groups = []
        for name in self.watcher_names(statuses):
            rows = list(self.processes.get(name.lower(), {}).values())
            groups.append((name, rows))
        descending = sort != "pid"
        if sort != "pid":
            groups.sort(key=lambda g: _total(g[1], sort), reverse=descending != reverse)
        groups.sort(key=lambda g: g[0] == CIRCUS)  # circusd's own, always last
        for name, rows in groups:
            status = statuses.get(name, "-" if name != CIRCUS else "")
            lines.append(
                _line(
                    name,
                    status,
                    f"{sum(r.cpu for r in rows):.1f}" if rows else "",
                    f"{sum(r.mem for r in rows):.1f}" if rows else "",
                    human_bytes(sum(r.rss for r in rows)) if rows else "",
                    duration(max(r.age for r in rows)) if rows else "",
                    "",
                    _count(len(rows)),
                )
            )
            rows.sort(
                key=lambda r: (r.key(sort), -r.pid), reverse=descending != reverse
            )
            for row in rows:
                lines.append(
                    _line(
                        f"  {row.pid}",
                        "",
                        f"{row.cpu:.1f}",
                        f"{row.mem:.1f}",
                        human_bytes(row.rss),
                        duration(row.age),
                        row.user,
                        row.command,
                    )
                )
        if self.sockets:
            lines += ["", _line("SOCKET", "", "", "", "", "", "READS/S", "")]
            for fd in sorted(self.sockets, key=lambda fd: self.sockets[fd][0]):
                address, reads, _ = self.sockets[fd]
                lines.append(_line(f"  {address}", "", "", "", "", "", str(reads), ""))
        return lines

    def data(self, statuses: Mapping[str, str]) -> dict[str, Any]:
        """The same as a JSON-ready mapping (``circusctl --json top``)."""
        return {
            "watchers": {
                name: {
                    "status": statuses.get(name),
                    "processes": [
                        {
                            "pid": r.pid,
                            "cpu": r.cpu,
                            "mem": r.mem,
                            "rss": r.rss,
                            "age": round(r.age, 1),
                            "user": r.user,
                            "command": r.command,
                        }
                        for r in sorted(
                            self.processes.get(name.lower(), {}).values(),
                            key=lambda r: r.pid,
                        )
                    ],
                }
                for name in self.watcher_names(statuses)
            },
            "sockets": {address: reads for address, reads, _ in self.sockets.values()},
        }


def heading(title: str, sort: str, reverse: bool) -> list[str]:
    """The title line and the sort and keys line."""
    return [title, f"sort: {sort}{' (reversed)' if reverse else ''}   {HELP}"]


def fleet_frame(
    sections: Sequence[tuple[str, list[str]]],
    sort: str = "cpu",
    reverse: bool = False,
    width: int = 100,
    height: int = 0,
    title: str = "",
) -> list[str]:
    """The screen of several hosts: one heading, then per host its label and
    its lines (a ``table`` or a notice)."""
    lines = heading(title, sort, reverse)
    for label, body in sections:
        lines += ["", f"== {label} ==", *body]
    return fit(lines, width, height)


def fit(lines: list[str], width: int, height: int) -> list[str]:
    """Cut to the screen; ``height`` 0 means no limit."""
    lines = [line[:width].rstrip() for line in lines]
    if height and len(lines) > height:
        hidden = len(lines) - height + 1
        lines = lines[: height - 1] + [f"... {hidden} more lines"]
    return lines


def _total(rows: list[Row], sort: str) -> float:
    if not rows:
        return -1.0
    if sort == "age":
        return max(r.age for r in rows)
    return sum(r.key(sort) for r in rows)


def _count(count: int) -> str:
    if count == 0:
        return "no processes"
    return f"{count} process" if count == 1 else f"{count} processes"


def _line(*cells: str) -> str:
    name, status, cpu, mem, rss, age, user, command = cells
    return (
        f"{name:<24} {status:<9} {cpu:>6} {mem:>5} {rss:>8} {age:>7}  "
        f"{user:<10} {command}"
    ).rstrip()
