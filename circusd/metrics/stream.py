"""The stats stream: an XPUB socket that publishes once a second, and only
while someone is subscribed.

XPUB hands us every subscription and unsubscription, each with the
connection it came from, and ``Interest`` counts which connections hold each
topic (not trusting an unsubscription from one that never held it). With no
topic held, there is no timer at all: the helper sleeps until a subscriber
arrives.

Socket "reads" count, as Circus does, the 10 ms periods in which a listening
socket had a connection waiting; but instead of polling every socket every
10 ms, each one is watched by the event loop and, once seen readable, left
alone for 10 ms. An idle socket costs nothing, a busy one at most 100
wake-ups a second, and only while someone is subscribed to ``stat.sockets``.

Only callers who may read circusd's state can subscribe (``gate``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import zmq
import zmq.asyncio

from circusd.metrics.collect import SOCKETS, Interest, messages
from circusd.metrics.gate import StreamGate
from circusd.metrics.snapshot import Snapshot
from circusd.stats import Sampler

log = logging.getLogger(__name__)

PERIOD = 1.0  # seconds between two publications
READ_RESOLUTION = 0.01  # seconds a socket is left alone once seen readable
# A subscriber that cannot keep up loses messages instead of growing memory:
# about 40 publications of 500 processes.
SEND_HWM = 20_000


def source_fd(frame: zmq.Frame) -> int | None:
    """The descriptor of the connection a message came from; None for the
    unsubscriptions libzmq makes up for a connection that ended."""
    try:
        fd = frame.get(zmq.SRCFD)
    except zmq.ZMQError:
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class SocketReads:
    """Counts, per socket name, the periods in which a connection waited."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fds: Mapping[str, int]):
        self._loop = loop
        self._fds = dict(fds)
        self.counts: dict[str, int] = dict.fromkeys(fds, 0)
        self._watching = False
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def watch(self, on: bool) -> None:
        if on == self._watching:
            return
        self._watching = on
        for name, fd in self._fds.items():
            if on:
                self._loop.add_reader(fd, self._readable, name)
            else:
                self._loop.remove_reader(fd)
                timer = self._timers.pop(name, None)
                if timer is not None:
                    timer.cancel()

    def _readable(self, name: str) -> None:
        self.counts[name] += 1
        self._loop.remove_reader(self._fds[name])
        self._timers[name] = self._loop.call_later(READ_RESOLUTION, self._again, name)

    def _again(self, name: str) -> None:
        self._timers.pop(name, None)
        if self._watching:
            self._loop.add_reader(self._fds[name], self._readable, name)

    def take(self) -> dict[str, int]:
        """The counts since the last call."""
        counts, self.counts = self.counts, dict.fromkeys(self._fds, 0)
        return counts


class StatsStream:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        fd: int,
        endpoint: str,
        snapshot: Callable[[], Snapshot | None],
        sampler: Sampler,
        socket_fds: Mapping[str, int],
        gate: StreamGate,
    ) -> None:
        self._snapshot = snapshot
        self._sampler = sampler
        self._interest = Interest()
        self._loop = asyncio.get_running_loop()
        self._reads = SocketReads(self._loop, socket_fds)
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.published = 0  # ticks that published something (for tests and logs)
        self._socket = context.socket(zmq.XPUB)
        self._socket.linger = 0
        self._socket.sndhwm = SEND_HWM
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # see Interest
        gate.guard(self._socket, fd)  # also caps a subscription's size
        if endpoint.startswith("tcp://["):
            self._socket.ipv6 = True
        self._socket.setsockopt(zmq.USE_FD, fd)
        self._socket.bind(endpoint)

    async def serve(self) -> None:
        """Follow subscriptions until the socket is closed."""
        while True:
            try:
                message = await self._socket.recv(copy=False)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                raise
            self._interest.update(message.bytes, source_fd(message))
            self._follow()

    def _follow(self) -> None:
        """Start or stop publishing as the topics held say."""
        self._reads.watch(self._interest.wants(SOCKETS))
        if self._interest and self._timer is None:
            log.debug("subscriber arrived, publishing every %.0fs", PERIOD)
            # CPU is measured from here: a baseline kept from a sample
            # long ago would show an average over the idle time instead.
            self._sampler.keep_only(set())
            self._next = time.monotonic()
            self._tick()
        elif not self._interest and self._timer is not None:
            log.debug("no subscriber left, publishing stopped")
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        # libzmq may tell of a connection that ended before its descriptor is
        # closed, so every tick looks again for connections gone.
        self._interest.collect()
        if not self._interest:
            self._follow()  # stops
            return
        self._publish()
        # On a fixed grid; a tick that ran late does not shift the next ones.
        now = time.monotonic()
        self._next += PERIOD
        if self._next <= now:
            self._next = now + PERIOD
        self._timer = self._loop.call_at(
            self._loop.time() + self._next - now, self._tick
        )

    def _publish(self) -> None:
        snapshot = self._snapshot()
        if snapshot is None:
            return
        sent = 0
        for topic, body in messages(
            snapshot, self._interest, self._sampler, self._reads.take()
        ):
            try:
                self._socket.send_multipart([topic, body], flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                log.debug("stats message dropped topic=%s", topic)
        if sent:
            self.published += 1

    def close(self) -> None:
        self._reads.watch(False)
        if self._timer is not None:
            self._timer.cancel()
        self._socket.close()
