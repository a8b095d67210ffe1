"""The console's only ways to circusd: the control endpoint, the event
stream and the statistics stream, through ``circusd.client``.

Control calls use the blocking ``CircusClient`` on a small thread pool (one
client per thread), so the event loop never waits on ZeroMQ. The two
streams are SUB sockets on an asyncio ZeroMQ context; each is read by one
task whatever the number of browsers (the hub fans messages out).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import zmq
import zmq.asyncio

from circusd.client import CallError, CircusClient, connect_socket, parse_endpoint
from circusd.client.events import Event, decode_event

log = logging.getLogger(__name__)

WORKERS = 4
RETRY_FIRST = 0.5
RETRY_LONGEST = 10.0


class DaemonLink:
    """``await link.call("status")``: a reply dict, or CallError/ReplyError."""

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(
            WORKERS, thread_name_prefix="circusd-call"
        )
        self._local = threading.local()
        self._clients: list[CircusClient] = []
        self._lock = threading.Lock()

    def _client(self) -> CircusClient:
        client: CircusClient | None = getattr(self._local, "client", None)
        if client is None:
            client = CircusClient(self.endpoint, self.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    async def call(self, command: str, **properties: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        def send() -> dict[str, Any]:
            return self._client().call(command, **properties)

        return await loop.run_in_executor(self._pool, send)

    def close(self) -> None:
        """Drop queued calls; one in flight ends within its timeout."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


class Feed:
    """A SUB socket on an event or statistics stream, read by one task.

    ``topics`` may change while it runs (``subscribe``): the statistics
    stream samples only what someone subscribed to, so the console asks
    for its watchers only, not for circusd's own processes or sockets.
    """

    def __init__(self, endpoint: str, topics: set[str]) -> None:
        self.endpoint = endpoint
        self._topics = set(topics)
        self._socket: zmq.asyncio.Socket | None = None

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def subscribe(self, topics: set[str]) -> None:
        if self._socket is not None:
            for topic in topics - self._topics:
                self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            for topic in self._topics - topics:
                self._socket.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        self._topics = set(topics)

    async def messages(
        self, on_connect: Callable[[], object] = lambda: None
    ) -> AsyncIterator[Event]:
        """Messages for ever. Until the endpoint first answers, connecting is
        retried with a growing delay; after that ZeroMQ reconnects by
        itself. ``on_connect`` runs once connected (what was published
        before is lost, so the caller refreshes what it knows)."""
        # The address of the shared context: pyzmq 24 (Debian 12) cannot
        # shadow a Context object, only its address.
        context = zmq.asyncio.Context.shadow(zmq.Context.instance().underlying)
        parsed = parse_endpoint(self.endpoint)
        delay = RETRY_FIRST
        while True:
            try:
                sock = connect_socket(context, zmq.SUB, parsed, 1.0)
                break
            except CallError as exc:
                log.warning("stream not reachable endpoint=%s retry_in=%.1fs: %s",
                            self.endpoint, delay, exc)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_LONGEST)
        self._socket = cast(zmq.asyncio.Socket, sock)
        try:
            for topic in self._topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            log.info("subscribed endpoint=%s", self.endpoint)
            on_connect()
            while True:
                frames = await sock.recv_multipart()  # type: ignore[misc]
                if len(frames) == 2:
                    yield decode_event(frames[0], frames[1])
        finally:
            self._socket = None
            sock.close(linger=0)
