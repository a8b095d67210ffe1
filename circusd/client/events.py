"""The event stream of the daemon (its PUB socket), as a generator of Events."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Sequence
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
) -> Generator[Event, None, None]:
    """Yield the events published on ``endpoint`` whose topic starts with one of
    ``topics`` (all events by default), until the caller stops iterating.

    ``timeout`` bounds only the connection check; the stream itself waits for
    as long as it takes. Raises DaemonUnreachable or InvalidEndpoint before the
    first event when the endpoint cannot be used.
    """
    parsed = parse_endpoint(endpoint)
    sock = connect(context or zmq.Context.instance(), zmq.SUB, parsed, timeout)
    return _events(sock, list(topics) or [""])


def _events(sock: zmq.Socket[Any], topics: list[str]) -> Generator[Event, None, None]:
    try:
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        while True:
            frames = sock.recv_multipart()
            if len(frames) != 2:
                logger.debug("ignored event frames=%d", len(frames))
                continue
            topic_bytes, payload = frames
            try:
                data = json.loads(payload)
            except ValueError:
                data = {"raw": payload.decode(errors="replace")}
            if not isinstance(data, dict):
                data = {"value": data}
            yield Event(topic_bytes.decode(errors="replace"), data)
    finally:
        sock.close(linger=0)
