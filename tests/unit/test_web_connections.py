"""circusd.web.connections with a real aiohttp server in this process (short
limits patched in, so that the tests take a second): idle and half-sent
connections are closed, a request in progress is not, a slow body gets
408."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from circusd.web import connections as module
from circusd.web.connections import Connections, read_body

pytestmark = pytest.mark.timeout(20)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)  # a request in progress, as an open page is
    return web.Response(text="done")


async def form(request: web.Request) -> web.Response:
    body = await read_body(request)
    return web.Response(text=str(body.get("a")))


class Clients:
    """Client connections, all closed at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, sent: bytes) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(sent)
        self.writers.append(writer)
        return reader

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def serving(test: Callable[[Clients], Awaitable[Any]]) -> Any:
    tracker = Connections()
    app = web.Application(middlewares=[tracker.middleware])
    app.router.add_get("/slow", slow)
    app.router.add_post("/form", form)
    runner = web.AppRunner(app)
    await runner.setup()
    tracker.server = runner.server
    server = await asyncio.get_running_loop().create_server(
        tracker.protocol, "127.0.0.1", 0
    )
    tracker.start()
    clients = Clients(server.sockets[0].getsockname()[1])
    try:
        return await test(clients)
    finally:
        await clients.close()
        server.close()
        tracker.stop()
        await runner.cleanup()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(), seconds)  # until end of file
    except TimeoutError:
        return False
    return True


def test_idle_connections_are_closed_but_not_one_with_a_request_in_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "IDLE", 0.4)
    monkeypatch.setattr(module, "SWEEP", 0.1)

    async def test(clients: Clients) -> tuple[bool, bool, bytes]:
        half = await clients.open(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # unfinished
        busy = await clients.open(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        half_closed = await closed_within(half, 1.2)
        answer = await asyncio.wait_for(busy.read(200), 2)
        # Kept alive after its answer, then idle: closed as well.
        idle_closed = await closed_within(busy, 1.2)
        return half_closed, idle_closed, answer

    half_closed, idle_closed, answer = asyncio.run(serving(test))
    assert half_closed
    assert answer.startswith(b"HTTP/1.1 200")
    assert idle_closed


def test_past_the_limit_a_new_connection_closes_the_idlest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "MAX_CONNECTIONS", 3)

    async def test(clients: Clients) -> tuple[bool, bool, bytes]:
        readers = []
        for _ in range(3):
            readers.append(await clients.open(b"GET /slow HTTP/1.1\r\n"))
            await asyncio.sleep(0.05)
        reader = await clients.open(
            b"POST /form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: 3\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\na=1"
        )
        answer = await asyncio.wait_for(reader.read(), 3)
        return (
            await closed_within(readers[0], 1),
            await closed_within(readers[2], 0.2),
            answer,
        )

    oldest_closed, newest_closed, answer = asyncio.run(serving(test))
    assert oldest_closed and not newest_closed
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"1")


def test_a_body_that_does_not_arrive_in_time_gets_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "BODY_TIMEOUT", 0.3)

    async def test(clients: Clients) -> bytes:
        reader = await clients.open(
            b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\na="
        )
        return await asyncio.wait_for(reader.read(100), 3)

    assert asyncio.run(serving(test)).startswith(b"HTTP/1.1 408")
