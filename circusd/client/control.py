"""A blocking client for the control channel of circusd (and Circus).

The control channel is a ZeroMQ ROUTER on the daemon's side; the client is a
DEALER with a random identity that sends one JSON frame per request and
matches the reply by its ``id``. Every call is bounded by one deadline: late
replies to earlier calls are dropped without extending it.

The socket is made by a Connector (``connect_socket`` by default), so the
same client works directly and through an SSH session.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import zmq

from circusd.client.endpoints import (
    DEFAULT_ENDPOINT,
    Connector,
    connect_socket,
    parse_endpoint,
)
from circusd.client.errors import CallError, CallTimeout, ReplyError

logger = logging.getLogger(__name__)


class CircusClient:
    """A synchronous client for the control endpoint.

    ``call`` returns the reply as a dict or raises a CallError subclass. The
    connection is made at the first call; after a timeout it is dropped and
    made again, so an unanswered request is never delivered late.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        *,
        connect: Connector = connect_socket,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.endpoint = parse_endpoint(endpoint)
        self.timeout = timeout
        self._connect = connect
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._cast_pending = False

    def __enter__(self) -> CircusClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket; waits up to ``timeout`` only to deliver casts."""
        if self._socket is None:
            return
        linger = int(self.timeout * 1000) if self._cast_pending else 0
        self._socket.close(linger=linger)
        self._socket = None
        self._cast_pending = False

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send ``command`` and return the reply whose id matches.

        Raises ReplyError for ``status: error``, DaemonUnreachable (CallTimeout
        after sending) when nothing answers in ``timeout`` seconds.
        """
        # Connecting has its own limit (over SSH: the login, which may wait
        # for a password); the exchange then has the whole timeout.
        self._ensure_socket(time.monotonic() + self.timeout)
        deadline = time.monotonic() + self.timeout
        request_id = uuid.uuid4().hex
        message = {"command": command, "properties": properties, "id": request_id}
        sock = self._send(message, deadline)
        try:
            reply = self._receive(sock, request_id, deadline)
        except CallTimeout:
            self._drop_socket()
            raise
        if reply.get("status") == "error":
            raise ReplyError(reply)
        return reply

    def cast(self, command: str, **properties: Any) -> None:
        """Send ``command`` without waiting for, or getting, a reply."""
        message = {"command": command, "properties": properties, "msg_type": "cast"}
        self._send(message, time.monotonic() + self.timeout)
        self._cast_pending = True

    def _ensure_socket(self, deadline: float) -> zmq.Socket[Any]:
        if self._socket is None:
            remaining = max(deadline - time.monotonic(), 0.001)
            self._socket = self._connect(
                self._context, zmq.DEALER, self.endpoint, remaining
            )
        return self._socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
            self._cast_pending = False

    def _send(self, message: dict[str, Any], deadline: float) -> zmq.Socket[Any]:
        try:
            payload = json.dumps(message).encode()
        except (TypeError, ValueError) as exc:
            raise CallError(f"cannot encode {message['command']!r}: {exc}") from None
        sock = self._ensure_socket(deadline)
        try:
            if not sock.poll(_milliseconds_left(deadline), zmq.POLLOUT):
                self._drop_socket()
                raise CallTimeout(
                    self.endpoint.address,
                    f"no answer within {self.timeout:g} s (connection not completed)",
                )
            sock.send(payload, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._drop_socket()
            raise CallError(f"cannot send to {self.endpoint.address}: {exc}") from None
        return sock

    def _receive(
        self, sock: zmq.Socket[Any], request_id: str, deadline: float
    ) -> dict[str, Any]:
        while True:
            remaining = _milliseconds_left(deadline)
            try:
                if remaining == 0 or not sock.poll(remaining, zmq.POLLIN):
                    raise CallTimeout(
                        self.endpoint.address,
                        f"no reply within {self.timeout:g} s",
                    )
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                self._drop_socket()
                raise CallError(
                    f"cannot receive from {self.endpoint.address}: {exc}"
                ) from None
            reply = _decode_reply(frames, self.endpoint.address)
            if reply.get("id") == request_id:
                return reply
            logger.debug(
                "discarded reply id=%r expected=%s", reply.get("id"), request_id
            )


def _milliseconds_left(deadline: float) -> int:
    return max(int((deadline - time.monotonic()) * 1000), 0)


def _decode_reply(frames: Sequence[bytes], address: str) -> dict[str, Any]:
    try:
        reply = json.loads(frames[-1])
    except (ValueError, IndexError):
        raise CallError(f"invalid reply from {address}: not JSON") from None
    if not isinstance(reply, dict):
        raise CallError(f"invalid reply from {address}: not a JSON object")
    return reply
