"""Process trees: finding everything a child started, signalling it, and
waiting, without polling, until all of it is gone.

Each member is held by a pidfd, so a pid reused by an unrelated process is
never signalled, and an exit wakes the event loop the moment it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) for every process, from one read of /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def members(leaders: Iterable[int]) -> set[int]:
    """The leaders and every process that descends from them or shares their
    session, including grandchildren re-parented to circusd after their
    parent exited. A process that both left the session and lost its parent
    (setsid after a double fork) cannot be told apart without cgroups."""
    table = _proc_table()
    roots = set(leaders)
    found = {pid for pid in roots if pid in table}
    found |= {pid for pid, (_, sid) in table.items() if sid in roots}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    found.discard(os.getpid())
    return found


def children_of(pid: int, recursive: bool) -> set[int]:
    """Descendants of one process (direct children only unless recursive)."""
    found = members([pid]) - {pid}
    if recursive:
        return found
    table = _proc_table()
    return {child for child in found if table.get(child, (0, 0))[0] == pid}


class Tree:
    """The process trees under some leaders, held by pidfds until closed."""

    def __init__(self, leaders: Iterable[int]) -> None:
        self.leaders = set(leaders)
        self._pidfds: dict[int, int] = {}
        self.refresh()

    def refresh(self) -> None:
        """Take in members that appeared since (new children, orphans)."""
        for pid in members(self.leaders) - set(self._pidfds):
            with contextlib.suppress(OSError):  # gone already
                self._pidfds[pid] = os.pidfd_open(pid)

    @property
    def pids(self) -> list[int]:
        return sorted(self._pidfds)

    def signal(self, signum: int, *, leaders: bool = True, others: bool = True) -> None:
        for pid, fd in self._pidfds.items():
            if (pid in self.leaders and leaders) or (
                pid not in self.leaders and others
            ):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signum)

    async def wait(self, timeout: float) -> bool:
        """Wait until every member has exited; forget those that did."""
        loop = asyncio.get_running_loop()
        exited: dict[int, asyncio.Future[None]] = {}
        for pid, fd in self._pidfds.items():
            exited[pid] = loop.create_future()
            loop.add_reader(fd, _resolve, exited[pid])
        try:
            if exited:
                await asyncio.wait(exited.values(), timeout=timeout)
        finally:
            for fd in self._pidfds.values():
                loop.remove_reader(fd)
        for pid, future in exited.items():
            if future.done():
                os.close(self._pidfds.pop(pid))
        return not self._pidfds

    def close(self) -> None:
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
