"""The running daemon: endpoints, signals, and the order of start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
import zmq.asyncio

from circusd.arbiter import Arbiter
from circusd.config.model import Config
from circusd.control.auth import Guard
from circusd.control.policy import Policy
from circusd.control.protocol import MAX_MESSAGE
from circusd.control.server import ControlServer
from circusd.control.subscribers import SubscriberGate
from circusd.errors import CircusdError, ConfigError
from circusd.metrics.service import MetricsService
from circusd.plugin_watchers import connect_address
from circusd.reaper import become_subreaper
from circusd.sockets import passed_sockets
from circusd.streams import console
from circusd.systemd import ActivatedContext, Systemd, status_line

log = logging.getLogger(__name__)


class StartupError(CircusdError):
    """circusd cannot start (an endpoint or socket cannot be bound)."""


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None


def claim_ipc_path(path: str) -> None:
    """Refuse to take over an ipc path another live daemon answers on;
    remove a stale socket file left by one that died."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return
    except ConnectionRefusedError:
        os.unlink(path)  # stale: nobody listens
        return
    except OSError as exc:
        raise StartupError(f"cannot use endpoint path {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(f"endpoint path {path} is in use by another running process")


class ReportingArbiter(Arbiter):
    """The arbiter, calling ``on_event`` after each event it publishes (every
    change in processes and watchers is one), for systemd's STATUS= line."""

    def __init__(
        self, config: Config, context: zmq.Context[Any], on_event: Callable[[], None]
    ) -> None:
        super().__init__(config, context)
        self._on_event = on_event

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        super().publish(topic, payload)
        self._on_event()


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        # First, before anything can spawn: systemd's variables leave os.environ.
        self.systemd = Systemd.from_environment()
        passed_sockets.offer(self.systemd.socket_fds())
        self.context = ActivatedContext()
        self.arbiter: Arbiter
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ipc_paths: list[str] = []
        self._control: zmq.asyncio.Socket | None = None
        self.exit_code = 0

    # -- binding -------------------------------------------------------------------

    def _bind(self, kind: int, endpoint: str) -> zmq.asyncio.Socket:
        # An endpoint passed by systemd is its socket: never probe or unlink it.
        path = None if self.context.adopts(endpoint) else ipc_path(endpoint)
        if path is not None:
            claim_ipc_path(path)
        sock = self.context.socket(kind)
        sock.linger = 0
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        old_umask = os.umask(0o077) if path is not None else None
        try:
            self.guard.bind(sock, endpoint)  # ZAP, CURVE, the socket file's owner
        except zmq.ZMQError as exc:
            sock.close()
            raise StartupError(f"cannot bind {endpoint}: {exc.strerror}") from None
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if path is not None:
            self._ipc_paths.append(path)
        return sock

    def bind_all(self) -> None:
        circus = self.config.circus
        self.guard = Guard(circus, self.context)  # who is calling: control/auth.py
        self.context.adopt(
            self.systemd.endpoint_fds(
                {
                    "control": circus.endpoint,
                    "pubsub": circus.pubsub_endpoint,
                    "stats": circus.stats_endpoint,
                }
            )
        )
        self._control = self._bind(zmq.ROUTER, circus.endpoint)
        self.metrics = MetricsService(circus, self.guard, self.context)
        try:
            self.metrics.bind(claim_ipc_path, self._ipc_paths)
        except OSError as exc:
            raise StartupError(f"cannot bind the statistics endpoints: {exc}") from None
        self.arbiter = ReportingArbiter(self.config, self.context, self._changed)
        self.arbiter.event_gate = self._event_gate()
        self.arbiter.bind_events = self.guard.bind_file
        self.arbiter.control_endpoint = connect_address(
            circus.endpoint, self._control.getsockopt_string(zmq.LAST_ENDPOINT)
        )
        pubsub_path = (
            None
            if self.context.adopts(circus.pubsub_endpoint)
            else ipc_path(circus.pubsub_endpoint)
        )
        if pubsub_path is not None:
            claim_ipc_path(pubsub_path)
            self._ipc_paths.append(pubsub_path)
        try:
            self.arbiter.bind()
        except OSError as exc:
            raise StartupError(f"cannot bind {circus.pubsub_endpoint}: {exc}") from None
        except zmq.ZMQError as exc:
            raise StartupError(
                f"cannot bind {circus.pubsub_endpoint}: {exc.strerror}"
            ) from None

    def _event_gate(self) -> SubscriberGate:
        """Who may subscribe to the event stream: those who may read."""
        circus = self.config.circus
        policy = Policy(os.geteuid(), self.guard.owner_uid, self.guard.readonly_gid)
        gate = SubscriberGate("events", policy, circus.insecure_tcp)
        self.guard.streams.append(gate)
        return gate

    def _changed(self) -> None:
        self.systemd.changed()
        self.metrics.changed()

    # -- running ---------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        become_subreaper()
        try:
            self.bind_all()
        except BaseException:
            self._abort()
            raise
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        loop.add_signal_handler(signal.SIGUSR2, self._on_usr2)
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        assert self._control is not None
        control = ControlServer(self, self._control)
        server = asyncio.create_task(control.serve())
        self.systemd.start(self._status_line)
        await asyncio.sleep(0)  # the server now waits for requests
        log.info(
            "circusd started pid=%d endpoint=%s",
            os.getpid(),
            self.config.circus.endpoint,
        )
        self._warn_unsupported()
        self.metrics.start(self.arbiter)
        self.systemd.ready("starting watchers")
        self.background(self._start_watchers(), "start")
        await self._done.wait()
        await control.drain(timeout=2.0)  # a waiting `quit` gets its reply
        await self.metrics.stop()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        self._close()
        log.info("circusd stopped pid=%d exit_code=%d", os.getpid(), self.exit_code)
        return self.exit_code

    def _status_line(self) -> str:
        watchers = self.arbiter.watchers.values()
        return status_line(
            running=self.arbiter.numprocesses(),
            wanted=sum(w.numprocesses for w in watchers if w.is_running()),
            watchers=len(watchers),
            failed=sum(1 for w in watchers if w.status() == "failed"),
        )

    def _warn_unsupported(self) -> None:
        """Say once, at start, which parts of the config are not acted on."""
        circus = self.config.circus
        if circus.multicast_endpoint:
            log.warning(
                "multicast_endpoint %s ignored: autodiscovery is not supported",
                circus.multicast_endpoint,
            )
        unused = passed_sockets.names() - set(self.arbiter.sockets)
        for name in sorted(unused):
            log.warning(
                "systemd socket %s not used: no [socket:%s] in the config "
                "and not an endpoint circusd binds",
                name,
                name,
            )

    async def _start_watchers(self) -> None:
        await self.arbiter.start()
        self.systemd.changed()

    def background(self, job: Coroutine[Any, Any, Any], what: str) -> None:
        """Run work that a client did not wait for; log if it fails."""
        task = asyncio.create_task(job)
        self._tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                exc = finished.exception()
                log.error(
                    "%s failed: %s",
                    what,
                    exc,
                    exc_info=not isinstance(exc, CircusdError),
                )

        task.add_done_callback(done)

    def _on_stop_signal(self, signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.background(self.shutdown(), "shutdown")

    def _on_hup(self) -> None:
        log.info("received SIGHUP, reloading the config")
        self.background(self.reload_config(), "reload")

    def _on_usr1(self) -> None:
        log.info("received SIGUSR1, reopening output files")
        for watcher in self.arbiter.watchers.values():
            watcher.reopen_streams()

    def _on_usr2(self) -> None:
        log.info("received SIGUSR2, ignored")

    # -- commands that act on the whole daemon -----------------------------------

    async def shutdown(self) -> None:
        self.systemd.stopping()
        await self.arbiter.stop()
        self._done.set()

    async def reload_config(self, config: Config | None = None) -> None:
        """Apply the config file again (``config``: already read and checked)."""
        self.systemd.reloading()
        try:
            await self.arbiter.reload_config(config)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            self.systemd.reloaded(problem=str(exc))
            raise
        except Exception:
            self.systemd.reloaded(problem="internal error, see the log")
            raise
        self.metrics.changed()  # sockets may have changed, which no event says
        self.systemd.reloaded()

    async def restart_all(self) -> None:
        """``restart`` without a name: re-read the config, restart everything."""
        await self.reload_config()
        for watcher in self.arbiter.by_priority(
            self.arbiter.watchers.values(), reverse=True
        ):
            if watcher.config.autostart or watcher.is_running():
                await watcher.restart()

    def _abort(self) -> None:
        """Binding failed: release what was bound, and only our own files."""
        arbiter = getattr(self, "arbiter", None)
        if arbiter is not None:
            for sock in arbiter.sockets.values():
                sock.close()
        self.context.destroy(linger=0)  # every ZeroMQ socket, the ZAP one too
        for path in self._ipc_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.systemd.close()
        console.flush_all()

    def _close(self) -> None:
        if self.arbiter.publisher is not None:
            self.arbiter.publisher.close()
        if self._control is not None:
            self._control.close(linger=500)  # flush the last replies
        self.context.term()
        for path in self._ipc_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.systemd.close()
