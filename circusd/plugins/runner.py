"""Running one plugin in its own process (``python -m circusd.plugins``).

circusd starts the process with the plugin's settings on stdin, a JSON
document (``Settings``) on one end of a socket pair. It keeps the other end
as the plugin's line back to itself: one JSON object per line says that the
plugin is ready, why it cannot run, or carries a log record, which circusd
writes to its own log. Nothing about the plugin appears on its command line.
Run by hand with the settings in a file or a pipe, a plugin logs to stderr.

Exit status: 0 after a stop (SIGTERM, SIGINT, ``Plugin.stop``), 1 after a
failure worth retrying, 78 when retrying cannot help (bad settings or
options, a class that cannot be imported or created).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import signal
import socket
import stat
from typing import Any

from circusd.client.errors import CallError, ReplyError
from circusd.config import plugin_options as catalog
from circusd.plugins.base import Plugin, PluginError, Settings
from circusd.plugins.link import Link

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 78
MAX_SETTINGS = 1 << 20
MAX_LOG_TEXT = 4096


def read_settings(fd: int = 0) -> bytes:
    """Everything on ``fd`` up to end of file (at most MAX_SETTINGS bytes)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, 65536):
        size += len(chunk)
        if size > MAX_SETTINGS:
            raise PluginError(
                f"settings larger than {MAX_SETTINGS} bytes", permanent=True
            )
        chunks.append(chunk)
    return b"".join(chunks)


class Channel:
    """The plugin's end of its line to circusd."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    @classmethod
    def from_stdin(cls) -> Channel | None:
        """Take fd 0 when circusd made it a socket, and put /dev/null in its
        place, so that nothing the plugin starts inherits the line."""
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            return None
        sock = socket.socket(fileno=os.dup(0))
        sock.setblocking(True)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        return cls(sock)

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # circusd went away: nobody to tell
            self._socket.sendall(json.dumps(message).encode() + b"\n")

    def ready(self) -> None:
        self.send({"ready": {}})

    def error(self, error: PluginError) -> None:
        self.send({"error": {"reason": error.reason, "permanent": error.permanent}})

    def close(self) -> None:
        self._socket.close()


class ChannelHandler(logging.Handler):
    """Log records go to circusd, which writes them to its own log."""

    def __init__(self, channel: Channel, own_logger: str) -> None:
        super().__init__()
        self.channel = channel
        self.own_logger = own_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.name != self.own_logger:
                text = f"{record.name}: {text}"
            body = {"level": record.levelno, "message": text[:MAX_LOG_TEXT]}
            self.channel.send({"log": body})
        except Exception:
            self.handleError(record)


# -- finding the plugin's class ------------------------------------------------


def resolve(use: str) -> type[Plugin]:
    """The class ``use`` names. A shipped plugin's Circus name means ours;
    any other dotted path is imported here, in the plugin's process."""
    problem = catalog.not_shipped(use)
    if problem is not None:
        raise PluginError(problem, permanent=True)
    if catalog.is_flapping(use):
        raise PluginError(
            "flapping.Flapping is circusd's built-in restart policy; there is "
            "no process to run",
            permanent=True,
        )
    shipped = catalog.builtin(use)
    target = shipped.target if shipped is not None else use
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"cannot import {module_name}: {exc}", permanent=True
        ) from None
    except Exception as exc:
        raise PluginError(
            f"importing {module_name} failed: {describe(exc)}", permanent=True
        ) from None
    found = vars(module).get(attribute)
    if found is None:
        raise PluginError(f"module {module_name} has no {attribute}", permanent=True)
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise PluginError(
            f"{target} is not a circusd plugin{_hint(found)}", permanent=True
        )
    return found


def _hint(found: Any) -> str:
    bases = [base.__module__ for base in getattr(found, "__mro__", ())]
    if any(module.startswith("circus.") for module in bases):
        return " (it is written for Circus: derive it from circusd.plugins.Plugin)"
    return " (a subclass of circusd.plugins.Plugin)"


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _maybe(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


# -- the plugin's life ---------------------------------------------------------


async def run(settings: Settings, channel: Channel | None) -> int:
    try:
        plugin = create(settings)
        link = Link(settings.endpoint, settings.pubsub_endpoint, settings.timeout)
    except PluginError as exc:
        return failed(channel, exc)
    except CallError as exc:  # an endpoint that cannot be used at all
        return failed(channel, PluginError(str(exc), permanent=True))
    stopping = asyncio.Event()
    try:
        await start(plugin, link, stopping)
    except PluginError as exc:
        link.close()
        return failed(channel, exc)
    if channel is not None:
        channel.ready()
    plugin.log.debug("plugin started use=%s pid=%d", settings.use, os.getpid())
    return await serve(plugin, link, stopping, channel)


def create(settings: Settings) -> Plugin:
    """The plugin object, its options read; any failure here is permanent."""
    cls = resolve(settings.use)
    try:
        return cls(settings)
    except PluginError:
        raise
    except Exception as exc:
        log.debug("creating the plugin failed", exc_info=True)
        raise PluginError(
            f"{cls.__name__} cannot be created: {describe(exc)}", permanent=True
        ) from None


async def start(plugin: Plugin, link: Link, stopping: asyncio.Event) -> None:
    try:
        await link.connect()
        await link.call("numwatchers")  # the endpoint answers, and lets us in
    except ReplyError as exc:
        # Not permanent: a tcp caller may be identified on the next try.
        raise PluginError(f"circusd refused a request: {exc.reason}") from None
    except CallError as exc:
        raise PluginError(str(exc)) from None
    plugin.attach(link, stopping)
    try:
        await _maybe(plugin.handle_init())
    except PluginError:
        raise
    except Exception as exc:
        plugin.log.debug("handle_init failed", exc_info=True)
        raise PluginError(f"handle_init failed: {describe(exc)}") from None


async def serve(
    plugin: Plugin, link: Link, stopping: asyncio.Event, channel: Channel | None
) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    events = asyncio.create_task(dispatch(plugin, link))
    stopped = asyncio.create_task(stopping.wait())
    await asyncio.wait({events, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = EXIT_OK
    failure = None if events.cancelled() or not events.done() else events.exception()
    if failure is not None:
        error = PluginError(f"the event stream failed: {describe(failure)}")
        if channel is not None:
            channel.error(error)
        plugin.log.error("%s", error.reason)
        code = EXIT_FAILED
    for task in (events, stopped):
        task.cancel()
    plugin.cancel_timers()
    try:
        await _maybe(plugin.handle_stop())
    except Exception:
        plugin.log.exception("handle_stop failed")
    link.close()
    plugin.log.debug("plugin stopped pid=%d", os.getpid())
    return code


async def dispatch(plugin: Plugin, link: Link) -> None:
    async for event in link.events():
        try:
            await _maybe(plugin.handle_recv(event.topic, event.data))
        except Exception:
            plugin.log.exception("handle_recv failed topic=%s", event.topic)


def failed(channel: Channel | None, error: PluginError) -> int:
    if channel is not None:
        channel.error(error)
    else:
        log.error("plugin cannot run: %s", error.reason)
    return EXIT_CONFIG if error.permanent else EXIT_FAILED
