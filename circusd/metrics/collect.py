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
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from circusd.metrics.snapshot import Snapshot
from circusd.stats import Sampler, Wanted
from circusd.watcher import topic_name

log = logging.getLogger(__name__)

Message = tuple[bytes, bytes]
CIRCUS = "circus"  # the pseudo-watcher of circusd's own processes
SOCKETS = "sockets"


Connection = tuple[int, int]  # device and inode of a connection's socket
UNSOURCED = -1  # where subscriptions that name no descriptor are kept


def connection(fd: int) -> Connection | None:
    """What tells the connection on ``fd`` from a later one given the same
    descriptor; None once the descriptor is closed."""
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class Interest:
    """The topic prefixes some live subscriber holds, counted per connection.

    libzmq's XPUB, left to itself, passes on an unsubscription from a topic
    the connection never held as if the last holder had left (and a repeated
    one from a connection that held it once): trusted, one reader could stop
    the stream for every other. So the socket passes on every subscription
    and unsubscription (ZMQ_XPUB_VERBOSER), each with the descriptor of the
    connection that sent it (ZMQ_SRCFD), and the holders of each topic are
    counted here: a connection can only take away what it holds. libzmq
    reports a connection that went away with unsubscriptions from no
    descriptor; those only say to look (``collect``) for connections whose
    descriptor is closed, or now belongs to another connection, and drop
    what they held.
    """

    def __init__(self, identify: Callable[[int], Connection | None] = connection):
        self._identify = identify
        self._held: dict[int, tuple[Connection, set[str]]] = {}  # by descriptor
        self._holders: dict[str, int] = {}
        self._warned = False

    def __bool__(self) -> bool:
        return bool(self._holders)

    @property
    def prefixes(self) -> set[str]:
        return set(self._holders)

    def update(self, message: bytes, fd: int | None) -> None:
        """A subscription message, ``\\x01TOPIC`` or ``\\x00TOPIC``, from the
        connection on ``fd`` (None: from libzmq, about one that ended)."""
        if not message or message[0] not in (0, 1):
            return
        if fd is None and message[0] == 1:
            self._unsourced(message[1:].decode(errors="replace"))
            return
        current = None if fd is None else self._identify(fd)
        if fd is None or current is None:
            self.collect()
            return
        known, held = self._held.get(fd, (current, set()))
        if known != current:  # the descriptor's connection ended
            self._drop(fd)
            held = set()
        topic = message[1:].decode(errors="replace")
        if message[0] == 1 and topic not in held:
            held.add(topic)
            self._holders[topic] = self._holders.get(topic, 0) + 1
        elif message[0] == 0 and topic in held:
            held.discard(topic)
            self._release(topic)
        if held:
            self._held[fd] = current, held
        else:
            self._held.pop(fd, None)

    def _unsourced(self, topic: str) -> None:
        """A subscription that names no descriptor: libzmq makes up only
        unsubscriptions, so this libzmq does not tell where messages come
        from (no ZMQ_SRCFD). It is kept for good: the stream may then
        publish to nobody, never fall silent for someone."""
        if not self._warned:
            log.warning(
                "subscriptions name no connection (libzmq without ZMQ_SRCFD), "
                "their topics are published until circusd-stats restarts"
            )
            self._warned = True
        held = self._held.setdefault(UNSOURCED, ((0, 0), set()))[1]
        if topic not in held:
            held.add(topic)
            self._holders[topic] = self._holders.get(topic, 0) + 1

    def collect(self) -> None:
        """Drop the topics of connections that are gone."""
        for fd, (known, _) in list(self._held.items()):
            if fd != UNSOURCED and self._identify(fd) != known:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        for topic in self._held.pop(fd)[1]:
            self._release(topic)

    def _release(self, topic: str) -> None:
        self._holders[topic] -= 1
        if not self._holders[topic]:
            del self._holders[topic]

    def wants(self, name: str) -> bool:
        """Whether any message of ``stat.<name>`` (or below it) is wanted."""
        base = f"stat.{name}"
        return any(base.startswith(p) or p.startswith(base) for p in self._holders)


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
