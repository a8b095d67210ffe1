"""Metrics in the Prometheus text exposition format (version 0.0.4).

Served at ``GET /metrics`` on ``prometheus_endpoint`` by a small HTTP/1.1
server (one request per connection, bounded request size and time). The
values are read when the page is asked for, never on a timer.

CPU time is a counter: the user + system seconds of a watcher's processes
that are running, plus the last value seen of each process that has exited
since circusd-stats started. A process's CPU time after its last sample (the
previous scrape, or the previous second while the stats stream has a
subscriber) is not counted, so the counter can fall a little short for
processes that exit often; it never goes down.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from circusd.metrics.snapshot import Snapshot, WatcherEntry
from circusd.stats import Sampler

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("stopped", "starting", "active", "stopping", "failed")
REQUEST_LIMIT = 8192  # bytes of request line and headers
REQUEST_TIMEOUT = 5.0  # seconds to receive them
MAX_CLIENTS = 16  # connections waiting for their request
MAX_CONNECTIONS = 64  # in all, answers being sent included


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # gauge or counter
    help: str


WATCHER_FAMILIES = (
    Family(
        "circusd_watcher_processes", "gauge", "Processes of the watcher running now."
    ),
    Family(
        "circusd_watcher_numprocesses",
        "gauge",
        "Processes the watcher keeps running while it is active (numprocesses).",
    ),
    Family(
        "circusd_watcher_state",
        "gauge",
        "1 for the state the watcher is in, 0 for the others.",
    ),
    Family(
        "circusd_watcher_spawns_total",
        "counter",
        "Processes started for the watcher since circusd started.",
    ),
    Family(
        "circusd_watcher_unexpected_exits_total",
        "counter",
        "Processes of the watcher that exited without being asked to "
        "(crashes) since circusd started.",
    ),
    Family(
        "circusd_watcher_cpu_seconds_total",
        "counter",
        "User and system CPU time of the watcher's processes, in seconds.",
    ),
    Family(
        "circusd_watcher_memory_rss_bytes",
        "gauge",
        "Resident memory of the watcher's processes (their sum), in bytes.",
    ),
)
DAEMON_FAMILIES = (
    Family(
        "circusd_daemon_cpu_seconds_total",
        "counter",
        "User and system CPU time of circusd itself, in seconds.",
    ),
    Family(
        "circusd_daemon_memory_rss_bytes",
        "gauge",
        "Resident memory of circusd itself, in bytes.",
    ),
    Family(
        "circusd_daemon_start_time_seconds",
        "gauge",
        "When circusd started, in seconds since the epoch.",
    ),
)


def label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsPage:
    """Renders the page from the latest snapshot and fresh samples."""

    def __init__(self, snapshot: Callable[[], Snapshot | None], sampler: Sampler):
        self._snapshot = snapshot
        self._sampler = sampler
        self._exited_cpu: dict[str, float] = {}  # watcher -> seconds
        self._last_cpu: dict[int, tuple[str, float]] = {}  # pid -> (watcher, s)

    def render(self) -> str:
        snapshot = self._snapshot()
        if snapshot is None:
            return ""
        owners = {p.pid: w.name for w in snapshot.watchers for p in w.processes}
        usage = self._sampler.usage([*owners, snapshot.daemon_pid])
        self._account_exits(owners, usage)
        cpu = dict(self._exited_cpu)
        rss: dict[str, int] = {}
        for pid, owner in owners.items():
            if pid in usage:
                cpu[owner] = cpu.get(owner, 0.0) + usage[pid][0]
                rss[owner] = rss.get(owner, 0) + usage[pid][1]
        per_watcher = [
            (w, _watcher_samples(w, cpu.get(w.name, 0.0), rss.get(w.name, 0)))
            for w in snapshot.watchers
        ]
        lines: list[str] = []
        for family in WATCHER_FAMILIES:
            lines += _header(family)
            for watcher, samples in per_watcher:
                label = f'watcher="{label_value(watcher.name)}"'
                for extra, value in samples[family.name]:
                    lines.append(f"{family.name}{{{label}{extra}}} {number(value)}")
        lines += self._daemon_lines(snapshot.daemon_pid, usage)
        return "\n".join(lines) + "\n"

    def _account_exits(
        self, owners: dict[int, str], usage: dict[int, tuple[float, int]]
    ) -> None:
        """Keep the CPU time of processes that are gone, so that the
        counter does not go down when they leave."""
        for pid, (watcher, seconds) in list(self._last_cpu.items()):
            if pid not in usage or owners.get(pid) != watcher:
                self._exited_cpu[watcher] = self._exited_cpu.get(watcher, 0.0) + seconds
                del self._last_cpu[pid]
        for pid, watcher in owners.items():
            if pid in usage:
                self._last_cpu[pid] = (watcher, usage[pid][0])

    def _daemon_lines(
        self, pid: int, usage: dict[int, tuple[float, int]]
    ) -> Iterable[str]:
        if pid not in usage:
            return
        seconds, rss = usage[pid]
        started = _start_time(pid)
        values = {
            "circusd_daemon_cpu_seconds_total": round(seconds, 2),
            "circusd_daemon_memory_rss_bytes": rss,
            "circusd_daemon_start_time_seconds": round(started, 2),
        }
        for family in DAEMON_FAMILIES:
            yield from _header(family)
            yield f"{family.name} {number(values[family.name])}"


Sample = tuple[str, float]  # more labels (",name=\"value\"" or ""), the value


def _watcher_samples(
    watcher: WatcherEntry, cpu: float, rss: int
) -> dict[str, list[Sample]]:
    states = [(f',state="{s}"', float(s == watcher.state)) for s in STATES]
    return {
        "circusd_watcher_processes": [("", len(watcher.processes))],
        "circusd_watcher_numprocesses": [("", watcher.numprocesses)],
        "circusd_watcher_state": states,
        "circusd_watcher_spawns_total": [("", watcher.spawns)],
        "circusd_watcher_unexpected_exits_total": [("", watcher.unexpected_exits)],
        "circusd_watcher_cpu_seconds_total": [("", round(cpu, 2))],
        "circusd_watcher_memory_rss_bytes": [("", rss)],
    }


def _header(family: Family) -> list[str]:
    return [
        f"# HELP {family.name} {family.help}",
        f"# TYPE {family.name} {family.kind}",
    ]


def _start_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


# -- the HTTP side ---------------------------------------------------------------


class MetricsServer:
    """Any local user can connect, so a connection costs little and never
    stays long: at most ``MAX_CLIENTS`` wait for their request at a time,
    and a new one makes room by closing the one that has waited longest (a
    slow client cannot keep Prometheus out); at most ``MAX_CONNECTIONS`` in
    all. A client that goes away at any point is simply forgotten."""

    def __init__(self, fd: int, page: MetricsPage) -> None:
        self._listening = socket.socket(fileno=fd)
        self._listening.setblocking(False)
        self._page = page
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._open = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, sock=self._listening, limit=REQUEST_LIMIT
        )

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            head = await self._request(reader, writer)
            if head is not None:
                await self._send(writer, *self._answer(head))
        finally:
            self._open -= 1

    async def _request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The request line and headers; None when the client gave up or was
        closed to make room (a request too large gets its answer here)."""
        if len(self._waiting) >= MAX_CLIENTS:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.close()  # its read ends at once
        self._waiting[writer] = None
        try:
            return await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT
            )
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        except asyncio.LimitOverrunError:
            await self._send(
                writer, "431 Request Header Fields Too Large", "too large\n"
            )
        finally:
            self._waiting.pop(writer, None)
        return None

    def _answer(self, head: bytes) -> tuple[str, str]:
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        target = rest.partition(b" ")[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "only GET\n"
        if target.partition(b"?")[0] != b"/metrics":
            return "404 Not Found", "the metrics are at /metrics\n"
        started = time.monotonic()
        body = self._page.render()
        log.debug(
            "scraped seconds=%.3f bytes=%d", time.monotonic() - started, len(body)
        )
        return "200 OK", body if method == b"GET" else ""

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: str, body: str) -> None:
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        try:
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._listening.close()
