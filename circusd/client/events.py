"""The event stream of the daemon (its PUB socket), as a generator of Events."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from circusd.client.endpoints import Connector, connect_socket, parse_endpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One message of the event stream: ``watcher.<name>.<event>`` and its data."""

    topic: str
    data: dict[str, Any]

    @property
    def watcher(self) -> str | None:
        parts = self.topic.split(".")
        return ".".join(parts[1:-1]) if len(parts) >= 3 else None

    @property
    def event(self) -> str:
        return self.topic.rsplit(".", 1)[-1]


def subscribe(
    endpoint: str,
    topics: Sequence[str] = ("",),
    *,
    timeout: float = 5.0,
    connect: Connector = connect_socket,
    context: zmq.Context[Any] | None = None,
) -> EventStream:
    """The events published on ``endpoint`` whose topic starts with one of
    ``topics`` (all events by default), as an iterator; ``close`` ends it.

    ``timeout`` bounds only the connection check; the stream itself waits for
    as long as it takes. Raises DaemonUnreachable or InvalidEndpoint at once
    when the endpoint cannot be used.
    """
    parsed = parse_endpoint(endpoint)
    sock = connect(context or zmq.Context.instance(), zmq.SUB, parsed, timeout)
    return EventStream(sock, list(topics) or [""])


class EventStream(Iterator[Event]):
    """Events from a SUB socket, subscribed from the start; closing it (or
    leaving its ``with`` block) closes the socket, even before the first
    event."""

    def __init__(self, sock: zmq.Socket[Any], topics: Sequence[str]) -> None:
        self._socket = sock
        try:
            for topic in topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        except zmq.ZMQError:
            sock.close(linger=0)
            raise

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        if self._socket.closed:
            raise StopIteration
        while True:
            try:
                frames = self._socket.recv_multipart()
            except BaseException:
                self.close()
                raise
            if len(frames) == 2:
                return decode_event(*frames)
            logger.debug("ignored event frames=%d", len(frames))

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close(linger=0)


def decode_event(topic: bytes, payload: bytes) -> Event:
    """One two-frame message of an event or statistics stream."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = {"raw": payload.decode(errors="replace")}
    if not isinstance(data, dict):
        data = {"value": data}
    return Event(topic.decode(errors="replace"), data)
