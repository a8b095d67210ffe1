"""What the daemon tells its stats helper: one JSON line per change.

Pure data, encoded and decoded here, so that both sides agree on the shape
and the helper never needs the daemon's objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessEntry:
    pid: int
    wid: int
    started: float  # epoch seconds


@dataclass(frozen=True)
class WatcherEntry:
    name: str
    state: str  # stopped, starting, active, stopping, failed
    numprocesses: int  # how many it keeps running while active
    spawns: int
    unexpected_exits: int
    processes: tuple[ProcessEntry, ...] = ()


@dataclass(frozen=True)
class SocketEntry:
    name: str
    fd: int  # the daemon's fd number, as `listsockets` shows it
    address: str  # host:port or a path


@dataclass(frozen=True)
class Snapshot:
    daemon_pid: int
    watchers: tuple[WatcherEntry, ...] = ()
    sockets: tuple[SocketEntry, ...] = ()


def encode(snapshot: Snapshot) -> bytes:
    data = {
        "daemon_pid": snapshot.daemon_pid,
        "watchers": [
            [
                w.name,
                w.state,
                w.numprocesses,
                w.spawns,
                w.unexpected_exits,
                [[p.pid, p.wid, p.started] for p in w.processes],
            ]
            for w in snapshot.watchers
        ],
        "sockets": [[s.name, s.fd, s.address] for s in snapshot.sockets],
    }
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Snapshot:
    """Raises ValueError (or a subclass) on anything that is not a snapshot."""
    data: Any = json.loads(line)
    watchers = tuple(
        WatcherEntry(
            str(name),
            str(state),
            int(wanted),
            int(spawns),
            int(exits),
            tuple(ProcessEntry(int(p), int(w), float(s)) for p, w, s in processes),
        )
        for name, state, wanted, spawns, exits, processes in data["watchers"]
    )
    sockets = tuple(
        SocketEntry(str(name), int(fd), str(address))
        for name, fd, address in data["sockets"]
    )
    return Snapshot(int(data["daemon_pid"]), watchers, sockets)
