"""A plugin's connection to circusd, on the plugin's asyncio loop.

A DEALER on the control endpoint carries requests; replies are matched to
their request by ``id``, so calls may overlap and a late reply to a call
that timed out is dropped. A SUB on the event stream receives the
``watcher.`` events. These are the same sockets any client uses: circusd
judges a plugin's requests by its uid like anyone else's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from circusd.client.endpoints import new_socket, parse_endpoint, probe, tcp_failure
from circusd.client.errors import CallError, CallTimeout, ReplyError
from circusd.client.events import Event, decode_event

log = logging.getLogger(__name__)

TOPIC = b"watcher."
CAST_LINGER_MS = 1000  # at exit, how long queued casts may take to leave


class Link:
    def __init__(self, endpoint: str, pubsub_endpoint: str, timeout: float) -> None:
        self.endpoint = parse_endpoint(endpoint)
        self.pubsub_endpoint = parse_endpoint(pubsub_endpoint)
        self.timeout = timeout
        self._context = zmq.asyncio.Context()
        self._dealer: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Connect both sockets; return once the event stream's connection
        is made, so that no event after this is missed. Raises
        DaemonUnreachable at once, with the reason, when nothing listens on
        an endpoint, CallTimeout when the connection cannot be completed."""
        probe(self.endpoint, self.timeout)
        probe(self.pubsub_endpoint, self.timeout)
        self._sub = new_socket(self._context, zmq.SUB)  # type: ignore[assignment]
        assert self._sub is not None
        self._sub.setsockopt(zmq.SUBSCRIBE, TOPIC)
        monitor = self._sub.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED
        )
        try:
            self._sub.connect(self.pubsub_endpoint.address)
            async with asyncio.timeout(self.timeout):
                while not await _handshake_done(monitor):
                    if self.pubsub_endpoint.scheme == "tcp":
                        tcp_failure(self.pubsub_endpoint, self.timeout)  # raises
        except TimeoutError:
            raise CallTimeout(
                self.pubsub_endpoint.address,
                f"no connection within {self.timeout:g} s",
            ) from None
        finally:
            self._sub.disable_monitor()
            monitor.close(linger=0)
        self._dealer = new_socket(self._context, zmq.DEALER)  # type: ignore[assignment]
        assert self._dealer is not None
        self._dealer.connect(self.endpoint.address)
        self._reader = asyncio.create_task(self._read_replies())

    async def call(self, command: str, **properties: Any) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        message = {"command": command, "properties": properties, "id": request_id}
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(self.timeout):
                await self._socket().send(_encode(message))
                reply = await future
        except TimeoutError:
            raise CallTimeout(
                self.endpoint.address,
                f"no reply to {command!r} within {self.timeout:g} s",
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("status") == "error":
            raise ReplyError(reply)
        return reply

    def cast(self, command: str, **properties: Any) -> None:
        message = {"command": command, "properties": properties, "msg_type": "cast"}
        sent = self._socket().send(_encode(message))

        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.warning(
                    "cast not sent command=%s error=%s", command, future.exception()
                )

        sent.add_done_callback(done)  # type: ignore[attr-defined]

    async def events(self) -> AsyncIterator[Event]:
        """The ``watcher.`` events, as they come, for as long as the link lives."""
        if self._sub is None:
            raise CallError("not connected")
        while True:
            frames = await self._sub.recv_multipart()
            if len(frames) == 2:
                yield decode_event(frames[0], frames[1])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for future in self._pending.values():
            future.cancel()
        if self._sub is not None:
            self._sub.close(linger=0)
        if self._dealer is not None:
            self._dealer.close(linger=CAST_LINGER_MS)
        self._context.term()

    def _socket(self) -> zmq.asyncio.Socket:
        if self._dealer is None:
            raise CallError("not connected")
        return self._dealer

    async def _read_replies(self) -> None:
        dealer = self._socket()
        while True:
            frames = await dealer.recv_multipart()
            try:
                reply = json.loads(frames[-1])
            except (ValueError, IndexError):
                log.warning("reply ignored: not JSON")
                continue
            if not isinstance(reply, dict):
                continue
            future = self._pending.get(str(reply.get("id")))
            if future is not None and not future.done():
                future.set_result(reply)


async def _handshake_done(monitor: zmq.asyncio.Socket) -> bool:
    """Whether the next report of ``monitor`` is a finished handshake (else
    it is a failed attempt to connect)."""
    frames = await monitor.recv_multipart()
    return int.from_bytes(frames[0][:2], "little") == zmq.EVENT_HANDSHAKE_SUCCEEDED


def _encode(message: dict[str, Any]) -> bytes:
    try:
        return json.dumps(message).encode()
    except (TypeError, ValueError) as exc:
        raise CallError(f"cannot encode {message['command']!r}: {exc}") from None
