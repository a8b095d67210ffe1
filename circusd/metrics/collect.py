"""The messages of the stats stream, in Circus's shape (reference §2.5).

Two frames each: the topic and a JSON object.

- ``stat.<watcher>.<pid>``: the ``stats`` command's fields for one process
  (``children`` empty, as Circus sends it), plus ``subtopic`` (the pid) and
  ``name`` (null);
- ``stat.<watcher>``: ``{pid: [pids], cpu: mean, mem: sum, age: oldest}``;
- ``stat.circus.<pid>`` and ``stat.circus``: the same for circusd itself
  (``name`` "circusd") and this helper ("circusd-stats");
- ``stat.sockets.<fd>``: ``{fd, subtopic, reads, address}`` and
  ``stat.sockets``: ``{addresses: [...], reads}``.

Only what a subscriber asked for is sampled: ``Interest`` knows the topic
prefixes subscribed to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from circusd.metrics.snapshot import Snapshot
from circusd.stats import Sampler, Wanted
from circusd.watcher import topic_name

Message = tuple[bytes, bytes]
CIRCUS = "circus"  # the pseudo-watcher of circusd's own processes
SOCKETS = "sockets"


class Interest:
    """The topic prefixes some subscriber holds (XPUB tells them)."""

    def __init__(self) -> None:
        self.prefixes: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def update(self, message: bytes) -> None:
        """A subscription message: ``\\x01TOPIC`` or ``\\x00TOPIC``."""
        if not message:
            return
        topic = message[1:].decode(errors="replace")
        if message[0] == 1:
            self.prefixes.add(topic)
        elif message[0] == 0:
            self.prefixes.discard(topic)

    def wants(self, name: str) -> bool:
        """Whether any message of ``stat.<name>`` (or below it) is wanted."""
        base = f"stat.{name}"
        return any(base.startswith(p) or p.startswith(base) for p in self.prefixes)


def _message(topic: str, data: Mapping[str, Any]) -> Message:
    return topic.encode(), json.dumps(data).encode()


def aggregate(infos: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Circus's summary of a watcher: mean CPU, summed memory, oldest age."""
    cpus = [info["cpu"] for info in infos.values()]
    ages = [info["age"] for info in infos.values()]
    return {
        "pid": list(infos),
        "cpu": sum(cpus) / len(cpus) if cpus else 0.0,
        "mem": sum(info["mem"] for info in infos.values()),
        "age": max(ages) if ages else "N/A",
    }


def process_messages(
    name: str, wanted: Iterable[Wanted], sampler: Sampler, labels: Mapping[int, str]
) -> Iterator[Message]:
    """One message per live process of ``name``, then the aggregate (none
    when no process is left, as Circus does)."""
    found = sampler.batch(list(wanted), children=False)
    infos = {pid: info for pid, info in found.items() if isinstance(info, dict)}
    for pid, info in infos.items():
        yield _message(
            f"stat.{name}.{pid}", {**info, "subtopic": pid, "name": labels.get(pid)}
        )
    if infos:
        yield _message(f"stat.{name}", aggregate(infos))


def socket_messages(snapshot: Snapshot, reads: Mapping[str, int]) -> Iterator[Message]:
    total: dict[str, Any] = {"addresses": [], "reads": 0}
    for sock in snapshot.sockets:
        count = reads.get(sock.name, 0)
        total["addresses"].append(sock.address)
        total["reads"] += count
        yield _message(
            f"stat.{SOCKETS}.{sock.fd}",
            {
                "fd": sock.fd,
                "subtopic": sock.fd,
                "reads": count,
                "address": sock.address,
            },
        )
    if snapshot.sockets:
        yield _message(f"stat.{SOCKETS}", total)


def messages(
    snapshot: Snapshot,
    interest: Interest,
    sampler: Sampler,
    reads: Mapping[str, int],
) -> Iterator[Message]:
    """Everything one tick publishes, for the topics someone wants."""
    for watcher in snapshot.watchers:
        name = topic_name(watcher.name)
        if watcher.processes and interest.wants(name):
            wanted = (Wanted(p.pid) for p in watcher.processes)
            yield from process_messages(name, wanted, sampler, {})
    if interest.wants(CIRCUS):
        own = {snapshot.daemon_pid: "circusd", os.getpid(): "circusd-stats"}
        yield from process_messages(CIRCUS, map(Wanted, own), sampler, own)
    if interest.wants(SOCKETS):
        yield from socket_messages(snapshot, reads)
