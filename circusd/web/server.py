"""Running the console: the listening socket (its own, or one passed by
circusd), TLS, and a clean stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from circusd.web.connections import Connections
from circusd.web.console import Console
from circusd.web.passwords import UserStore
from circusd.web.settings import Settings, check, is_loopback_host
from circusd.web.views import WebConsole

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.certfile is None or settings.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certfile, settings.keyfile)
    return context


class BadRequests(logging.Filter):
    """aiohttp logs every request it cannot parse with a traceback, so
    anyone who reaches the port could fill circusd's log with a few bytes
    per request: such a request gets one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = (
                "bad request refused: %s",
                (" ".join(str(error).split())[:200],),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def passed_socket(fd: int) -> socket.socket:
    """The listening socket circusd passed; made non-inheritable again."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT. Raises SettingsError, UsersFileError,
    OSError or ssl.SSLError when the console cannot start."""
    sock = passed_socket(settings.fd) if settings.fd is not None else None
    check(settings, sock)
    logging.getLogger("aiohttp.server").addFilter(BadRequests())
    users = UserStore(settings.users_file)
    context = tls_context(settings)
    host = str(sock.getsockname()[0]) if sock is not None else settings.host
    loopback_only = (
        is_loopback_host(host) and context is None and not settings.trusted_proxies
    )
    console = Console(settings)
    web_console = WebConsole(settings, users, console, loopback_only)
    app = web_console.application()
    connections = Connections()
    app.middlewares.append(connections.middleware)
    runner = web.AppRunner(app, access_log=None, **_runner_options())
    await runner.setup()
    connections.server = runner.server
    loop = asyncio.get_running_loop()
    try:
        # Not aiohttp's sites: every connection goes through Connections.
        if sock is not None:
            server = await loop.create_server(
                connections.protocol, sock=sock, ssl=context
            )
        else:
            server = await loop.create_server(
                connections.protocol, settings.host, settings.port, ssl=context
            )
    except BaseException:
        await runner.cleanup()
        raise
    try:
        connections.start()
        console.start()
        log.info(
            "circushttpd started pid=%d url=%s users=%d endpoint=%s",
            os.getpid(),
            _url(server, context is not None),
            len(users.load()),
            settings.endpoint,
        )
        await _until_stopped()
    finally:
        server.close()
        connections.stop()
        await runner.cleanup()
        await console.stop()
    log.info("circushttpd stopped pid=%d", os.getpid())


def _url(server: asyncio.Server, tls: bool) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _runner_options() -> dict[str, Any]:
    """Cancel a handler when its browser goes away (aiohttp 3.9 and later
    ask for it), so a closed page frees its event stream at once; with
    aiohttp 3.8 that happens at the stream's next write (a keepalive at
    the latest)."""
    parameters = inspect.signature(web.Server.__init__).parameters
    return (
        {"handler_cancellation": True} if "handler_cancellation" in parameters else {}
    )


async def _until_stopped() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
