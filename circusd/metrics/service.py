"""The daemon's side of statistics: the listening sockets, the helper
process, and the snapshots it is sent.

The daemon binds the stats endpoint and the Prometheus port itself, at
start, like its other endpoints: an ipc socket file has its final owner and
mode from the first moment (``Guard.listening_socket``), a socket passed by
systemd under ``FileDescriptorName=stats`` is used as it is, and a bind
failure stops the start. The helper inherits the listening sockets and
serves them; if it dies it is started again (with a growing delay when it
keeps dying) and picks up the same sockets, so subscribers just reconnect.

The event loop does no sampling: on every change the arbiter publishes, a
snapshot is written to the helper within ``SNAPSHOT_DELAY`` (changes in
between are folded into one), and nothing at all while nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from circusd.config.model import CircusConfig
from circusd.metrics.snapshot import (
    ProcessEntry,
    Snapshot,
    SocketEntry,
    WatcherEntry,
    encode,
)
from circusd.restart import RestartPolicy

if TYPE_CHECKING:
    from circusd.arbiter import Arbiter
    from circusd.control.auth import Guard
    from circusd.systemd import ActivatedContext

log = logging.getLogger(__name__)

SNAPSHOT_DELAY = 0.05  # seconds; changes closer together are sent as one
WRITE_HIGH_WATER = 4 * 1024 * 1024  # bytes buffered for a helper that is stuck
STOP_WAIT = 2.0  # seconds for the helper to exit after its stdin closes
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def snapshot_of(arbiter: Arbiter) -> Snapshot:
    watchers = tuple(
        WatcherEntry(
            name=watcher.name,
            state=watcher.status(),
            numprocesses=watcher.numprocesses,
            spawns=watcher.spawns,
            unexpected_exits=watcher.unexpected_exits,
            processes=tuple(
                ProcessEntry(p.pid, p.wid, p.started)
                for p in sorted(watcher.processes.values(), key=lambda p: p.wid)
            ),
        )
        for watcher in sorted(arbiter.watchers.values(), key=lambda w: w.name)
    )
    sockets = tuple(
        SocketEntry(sock.name, sock.fileno, sock.address)
        for sock in sorted(arbiter.sockets.values(), key=lambda s: s.name)
        if sock.sock is not None
    )
    return Snapshot(os.getpid(), watchers, sockets)


def tcp_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket; ``*`` and an empty host mean every address."""
    host = host.removeprefix("[").removesuffix("]")
    if host in ("*", ""):
        host = "0.0.0.0"
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def abstract_listener(name: str, backlog: int = 128) -> socket.socket:
    """A unix socket listening in the abstract namespace (``ipc://@name``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_endpoint(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class _Writer(asyncio.Protocol):
    """The helper's stdin: remembers when the pipe is full."""

    def __init__(self, service: MetricsService) -> None:
        self._service = service
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._service.changed()


class _LogRelay(asyncio.Protocol):
    """The helper's stderr, line by line into our log."""

    def __init__(self) -> None:
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            level, _, text = line.decode(errors="replace").partition(" ")
            if level not in _LEVELS:
                level, text = "WARNING", line.decode(errors="replace")
            log.log(_LEVELS[level], "circusd-stats: %s", text)


class MetricsService:
    def __init__(
        self, circus: CircusConfig, guard: Guard, context: ActivatedContext
    ) -> None:
        self._circus = circus
        self._guard = guard
        self._context = context
        self.stats_endpoint: str | None = None  # what is served, for globaloptions
        self._stats: socket.socket | None = None
        self._prometheus: socket.socket | None = None
        self._arbiter: Arbiter | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._writer: _Writer | None = None
        self._relay: asyncio.BaseTransport | None = None
        self._socket_fds: dict[str, int] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._policy = RestartPolicy(max_retry=-1)
        self._started = 0.0
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self._stats is not None or self._prometheus is not None

    # -- binding ---------------------------------------------------------------

    def bind(self, claim_ipc_path: Callable[[str], None], created: list[str]) -> None:
        """Bind what the config asks for; an ipc path is added to ``created``
        (files to remove at exit) before it exists. Raises OSError or
        ConfigError."""
        circus = self._circus
        if circus.statsd and circus.stats_endpoint is not None:
            self._stats = self._bind_stats(
                circus.stats_endpoint, claim_ipc_path, created
            )
        if circus.prometheus_endpoint is not None:
            host, _, port = circus.prometheus_endpoint.rpartition(":")
            self._prometheus = tcp_listener(host, int(port))

    def _bind_stats(
        self, endpoint: str, claim_ipc_path: Callable[[str], None], created: list[str]
    ) -> socket.socket:
        self.stats_endpoint = endpoint
        passed = self._context.passed_fd(endpoint)
        if passed is not None:
            return socket.socket(fileno=os.dup(passed))  # systemd's, as it is
        if endpoint.startswith("ipc://@"):
            return abstract_listener(endpoint[len("ipc://@") :])
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://") :]
            claim_ipc_path(path)
            created.append(path)
            return self._guard.listening_socket(path)
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        sock = tcp_listener(host, 0 if port == "*" else int(port))
        if port == "*":
            self.stats_endpoint = tcp_endpoint(sock)
        return sock

    def _zmq_endpoint(self) -> str | None:
        """The address the helper binds with ZMQ_USE_FD."""
        if self._stats is None or self.stats_endpoint is None:
            return None
        if self.stats_endpoint.startswith("ipc://"):
            return self.stats_endpoint
        return tcp_endpoint(self._stats)

    # -- the helper --------------------------------------------------------------

    def start(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter
        if self.enabled:
            self._spawn()

    def _spawn(self) -> None:
        assert self._arbiter is not None
        self._restart = None
        # -P: not the working directory first on the module path (python -m
        # puts it there), where another user may have planted modules.
        argv = [sys.executable, "-P", "-m", "circusd.metrics.helper"]
        argv += ["--log-level", logging.getLevelName(log.getEffectiveLevel()).lower()]
        argv += self._reader_arguments()
        fds: list[int] = []
        zmq_endpoint = self._zmq_endpoint()
        if self._stats is not None and zmq_endpoint is not None:
            argv += ["--stats", str(self._stats.fileno()), zmq_endpoint]
            fds.append(self._stats.fileno())
        if self._prometheus is not None:
            argv += ["--prometheus", str(self._prometheus.fileno())]
            fds.append(self._prometheus.fileno())
        self._socket_fds = self._arbiter_socket_fds()
        for name, fd in self._socket_fds.items():
            argv += ["--socket", f"{name}={fd}"]
            fds.append(fd)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=fds,
            )
        except OSError as exc:
            log.error("cannot start circusd-stats: %s", exc)
            self._schedule_restart()
            return
        self._process = process
        self._started = asyncio.get_running_loop().time()
        self._arbiter.reaper.watch(process.pid, self._exited)
        log.info("started circusd-stats pid=%d", process.pid)
        self._connecting = asyncio.get_running_loop().create_task(
            self._connect(process)
        )

    def _reader_arguments(self) -> list[str]:
        """Who may subscribe to the stream: who may read circusd's state."""
        argv = []
        if self._guard.owner_uid is not None:
            argv += ["--owner-uid", str(self._guard.owner_uid)]
        if self._guard.readonly_gid is not None:
            argv += ["--readonly-gid", str(self._guard.readonly_gid)]
        if self._circus.insecure_tcp:
            argv.append("--insecure-tcp")
        return argv

    def _arbiter_socket_fds(self) -> dict[str, int]:
        assert self._arbiter is not None
        return {
            name: sock.fileno
            for name, sock in self._arbiter.sockets.items()
            if sock.sock is not None
        }

    async def _connect(self, process: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        assert process.stdin is not None and process.stderr is not None
        transport, writer = await loop.connect_write_pipe(
            lambda: _Writer(self), process.stdin
        )
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        relay, _ = await loop.connect_read_pipe(_LogRelay, process.stderr)
        if self._process is not process:  # exited meanwhile
            transport.close()
            relay.close()
            return
        self._stdin, self._writer, self._relay = transport, writer, relay
        self._send()

    def changed(self) -> None:
        """Something the helper shows changed; tell it soon."""
        if self._stdin is None or self._flush is not None:
            return
        self._flush = asyncio.get_running_loop().call_later(SNAPSHOT_DELAY, self._send)

    def _send(self) -> None:
        self._flush = None
        if self._stdin is None or self._writer is None or self._arbiter is None:
            return
        if self._writer.paused:
            return  # resume_writing calls changed() again
        if self._arbiter_socket_fds() != self._socket_fds:
            log.info("sockets changed, restarting circusd-stats")
            self._terminate()
            return
        self._stdin.write(encode(snapshot_of(self._arbiter)))

    def _exited(self, pid: int, status: int) -> None:
        process = self._process
        if process is None or process.pid != pid:
            return
        process.returncode = os.waitstatus_to_exitcode(status)
        self._process = None
        self._close_pipes()
        if self._stopping or (self._arbiter is not None and self._arbiter.stopping):
            return  # circusd is ending: no new helper
        uptime = asyncio.get_running_loop().time() - self._started
        if process.returncode == 0 or process.returncode == -signal.SIGTERM:
            uptime = max(uptime, 60.0)  # asked to restart: not a crash
        else:
            log.warning(
                "circusd-stats exited pid=%d exit_code=%d uptime=%.1fs",
                pid,
                process.returncode,
                uptime,
            )
        self._policy.record_exit(uptime)
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        delay = max(self._policy.delay(), 0.1)
        self._restart = asyncio.get_running_loop().call_later(delay, self._spawn)

    def _terminate(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)

    def _close_pipes(self) -> None:
        for transport in (self._stdin, self._relay):
            if transport is not None:
                transport.close()
        self._stdin = self._relay = self._writer = None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    async def stop(self) -> None:
        """End the helper (its stdin closes; SIGKILL if it lingers) and
        close the listening sockets."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        process = self._process
        self._close_pipes()
        if process is not None:
            await _wait_exit(process, STOP_WAIT)
        for sock in (self._stats, self._prometheus):
            if sock is not None:
                sock.close()


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for the process to end, whoever reaps it (the daemon's reaper
    may already be stopped): its pidfd becomes readable when it exits."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return  # already reaped
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            log.warning("circusd-stats did not exit, killing pid=%d", process.pid)
            process.kill()
            await asyncio.wait_for(exited, timeout)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    try:
        os.waitpid(process.pid, os.WNOHANG)
    except ChildProcessError:
        pass  # the reaper took it
    process.returncode = process.returncode if process.returncode is not None else 0
