"""The console's open connections, kept few and short-lived.

aiohttp waits for a request's headers, and for its body, as long as the
client likes: any local user could hold every file descriptor the console
has (1024 under systemd's default limit) with connections that send half a
request, and the console would accept no one. So each connection is
tracked from the moment it is made:

- one with no request in progress is closed once it has been idle for
  ``IDLE`` seconds (half a request, or a keep-alive connection: browsers
  open a new one);
- past ``MAX_CONNECTIONS``, a new connection first closes the one that has
  been idle longest (none is closed while a request is in progress: an open
  page's event stream is one, and the hub caps those);
- a request body must arrive within ``BODY_TIMEOUT`` (``read_body``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

IDLE = 15.0  # seconds without a request in progress
MAX_CONNECTIONS = 512
BODY_TIMEOUT = 10.0  # seconds for a request body (at most 64 KiB)
SWEEP = 1.0  # seconds between two looks for idle connections


class _Connection:
    __slots__ = ("handler", "busy", "since")

    def __init__(self, handler: Any, now: float) -> None:
        self.handler = handler  # aiohttp's RequestHandler, the asyncio protocol
        self.busy = 0  # requests in progress
        self.since = now  # when it was made, or its last request ended


class Connections:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.server: Callable[[], Any] | None = None  # aiohttp's web.Server
        self._clock = clock
        self._open: dict[int, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def protocol(self) -> Any:
        """The protocol factory for ``loop.create_server``."""
        self._forget_closed()
        if len(self._open) >= MAX_CONNECTIONS:
            self._close_idlest()
        assert self.server is not None, "set server before serving"
        handler = self.server()  # one aiohttp RequestHandler a connection
        self._open[id(handler)] = _Connection(handler, self._clock())
        return handler

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Marks the connection busy while a request is handled."""
        connection = self._open.get(id(request.protocol))
        if connection is not None:
            connection.busy += 1
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.busy -= 1
                connection.since = self._clock()

    # -- closing ---------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            self.close_idle()

    def close_idle(self) -> None:
        """Close every connection idle for longer than IDLE."""
        self._forget_closed()
        limit = self._clock() - IDLE
        for connection in list(self._open.values()):
            if not connection.busy and connection.since < limit:
                self._close(connection)

    def _close_idlest(self) -> None:
        idle = [c for c in self._open.values() if not c.busy]
        if idle:
            self._close(min(idle, key=lambda c: c.since))
        else:
            log.warning("connections all busy count=%d", len(self._open))

    def _close(self, connection: _Connection) -> None:
        del self._open[id(connection.handler)]
        transport = connection.handler.transport
        if transport is not None:
            transport.close()

    def _forget_closed(self) -> None:
        """Drop connections aiohttp has let go (their transport is gone)."""
        made_before = self._clock() - SWEEP
        for key, connection in list(self._open.items()):
            if connection.handler.transport is None and connection.since < made_before:
                del self._open[key]


async def read_body(request: web.Request) -> Any:
    """The form of a POST; a body that takes longer than BODY_TIMEOUT gets
    408, so a slow client cannot hold a request in progress for ever."""
    try:
        return await asyncio.wait_for(request.post(), BODY_TIMEOUT)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body too slow") from None
