"""The event stream: a ZeroMQ PUB socket with ``watcher.<name>.<event>`` topics.

Only callers who may read circusd's state can subscribe (``gate``, see
``circusd.control.subscribers``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import zmq

from circusd.control.auth import bound_tcp_address
from circusd.control.subscribers import SubscriberGate

log = logging.getLogger(__name__)

# A subscriber that cannot keep up loses events instead of growing memory.
SEND_HWM = 10_000


class Publisher:
    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        gate: SubscriberGate | None = None,
        bind: Callable[[zmq.Socket[Any], str], Any] = zmq.Socket.bind,
    ) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.PUB)
        self._socket.linger = 0
        self._socket.sndhwm = SEND_HWM
        tcp = endpoint.startswith("tcp://")
        if gate is not None:
            gate.guard(self._socket, tcp)
        bind(self._socket, endpoint)
        if gate is not None and tcp:
            gate.listening(*bound_tcp_address(self._socket))

    @property
    def bound(self) -> str:
        """The address bound (with the real port of a ``:*`` endpoint)."""
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        try:
            self._socket.send_multipart(
                [topic.encode(), json.dumps(payload).encode()], flags=zmq.NOBLOCK
            )
        except zmq.Again:
            log.debug("event dropped topic=%s", topic)

    def close(self) -> None:
        self._socket.close()
