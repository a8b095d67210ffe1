"""One SSH connection that carries every ZeroMQ connection of a command.

``SSHSession.connect_socket`` is a Connector (see circusd.client.endpoints):
give it to CircusClient or subscribe and their sockets reach the daemon
through the SSH server, as the SSH login user. tcp endpoints use
``direct-tcpip`` channels, ipc endpoints ``direct-streamlocal`` channels;
both are resolved on the server, as with ``ssh -L``.

The connection is made at the first socket, within ``SSHOptions.timeout``:
TCP (or ProxyJump hops), handshake, host key check, then public-key
authentication with the explicit key file, the agent's keys and the
IdentityFile keys, in that order. ``close`` ends it all; nothing it starts
outlives the process (threads are daemon threads, the bridge has no file).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paramiko
import zmq

from circusd.client.endpoints import Endpoint
from circusd.client.errors import InvalidEndpoint
from circusd.client.ssh import zmtp
from circusd.client.ssh.auth import Asker, Deadline, Login
from circusd.client.ssh.bridge import PendingBridge, Pump
from circusd.client.ssh.errors import ChannelRefused, SSHError, SSHUnreachable
from circusd.client.ssh.hostkeys import check_host_key, known_keys, preferred_key_types
from circusd.client.ssh.keys import AgentKeys, KeyRing
from circusd.client.ssh.proxy import ProxyProcess
from circusd.client.ssh.target import (
    HostSettings,
    SSHTarget,
    load_config,
    resolve_chain,
)
from circusd.client.ssh.transport import (
    PARAMIKO_TESTED,
    TunnelTransport,
    paramiko_version,
    preferred_ciphers,
    quick_ack,
    streamlocal_supported,
)

logger = logging.getLogger(__name__)

OPEN_ADMINISTRATIVELY_PROHIBITED = 1  # RFC 4254, 5.1
CLOSE_WAIT = 2.0  # seconds for paramiko's thread to end after close()


@dataclass(frozen=True)
class SSHOptions:
    """How to connect; shared by the sessions of a fan-out."""

    timeout: float = 10.0  # for the whole connection set-up
    config_file: str | None = None  # default: ~/.ssh/config
    accept_new: bool = False
    keys: KeyRing = field(default_factory=KeyRing)
    notice: Callable[[str], None] | None = None  # e.g. "added host key ..."
    asker: Asker | None = None  # for passwords; None: never ask


class SSHSession:
    """An SSH connection to ``target`` and the tunnels opened through it."""

    def __init__(self, target: SSHTarget, options: SSHOptions | None = None) -> None:
        self.target = target
        self.options = options or SSHOptions()
        self._lock = threading.Lock()
        self._transports: list[TunnelTransport] = []
        self._agents: list[AgentKeys] = []
        self._tunnels: dict[zmq.Socket[Any], Pump] = {}
        self._proxy: ProxyProcess | None = None
        self._closed = False
        # The TCP socket of a set-up in progress (open() holds the lock).
        self._connecting: socket.socket | None = None

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def label(self) -> str:
        return f"ssh {self.target}"

    def open(self) -> None:
        """Connect, check the host key and authenticate, if not done yet.

        Raises an SSHError subclass whose message names the host and why.
        """
        with self._lock:
            if self._closed:
                raise SSHError(f"{self.label}: the session is closed")
            if self._transports:
                return
            try:
                self._connect_chain(Deadline(self.options.timeout))
            except BaseException:
                self._close_transports()
                raise

    def connect_socket(
        self, context: zmq.Context[Any], kind: int, endpoint: Endpoint, timeout: float
    ) -> zmq.Socket[Any]:
        """A Connector: a ZeroMQ socket connected to ``endpoint`` over SSH."""
        self.open()
        if kind == zmq.DEALER and zmtp.ENABLED:  # ZMTP on the channel itself
            channel = self._open_channel(endpoint, timeout, zmtp.nothing)
            return zmtp.dealer(channel, self.label, timeout)
        pending = PendingBridge(context, kind, endpoint.address)
        try:
            channel = self._open_channel(endpoint, timeout, pending.prepare)
        except BaseException:
            pending.abort()
            raise
        try:
            sock, pump = pending.attach(channel, self._transports[-1], timeout)
        except BaseException:
            channel.close()
            raise
        with self._lock:
            # Tunnels whose copying has ended are forgotten.
            self._tunnels = {s: p for s, p in self._tunnels.items() if not p.done}
            self._tunnels[sock] = pump
        return sock

    def alive(self) -> bool:
        """Whether the session can be used: not closed, and its connection
        up or not made yet."""
        if self._closed:
            return False
        return not self._transports or self._transports[-1].is_active()

    def tunnel_ended(self, sock: zmq.Socket[Any]) -> bool:
        """Whether the server's side of ``sock``'s tunnel has gone: the
        daemon closed the connection, or copying failed."""
        pump = self._tunnels.get(sock)
        return pump is not None and (pump.ended_by_server or pump.error is not None)

    def problem(self) -> str | None:
        """Why tunnelled traffic stopped, if the session knows; else None."""
        for pump in list(self._tunnels.values()):
            if pump.error:
                return f"{self.label}: {pump.error}"
        transport = self._transports[-1] if self._transports else None
        if transport is not None and not transport.is_active():
            cause = transport.get_exception()
            detail = f": {cause}" if cause else ""
            ended = self._proxy.failure() if self._proxy is not None else None
            if ended:
                detail = f"{detail}; its ProxyCommand {ended}"
            return f"{self.label}: the SSH connection was lost{detail}"
        return None

    def close(self) -> None:
        """Close every tunnel, then the connection (and its ProxyJump hops).

        A set-up in progress in another thread fails at once, its socket shut.
        """
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            with contextlib.suppress(OSError):
                connecting.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._closed = True
            pumps, self._tunnels = list(self._tunnels.values()), {}
        for pump in pumps:
            pump.close()
        self._close_transports()

    def _close_transports(self) -> None:
        for transport in reversed(self._transports):
            # paramiko's reader thread polls with a 0.1 s timeout; shutting the
            # socket down wakes it at once, so close() need not wait for it.
            with contextlib.suppress(OSError, AttributeError):
                transport.sock.shutdown(socket.SHUT_RDWR)
            transport.close()
            if transport.is_alive() and transport is not threading.current_thread():
                transport.join(CLOSE_WAIT)
        self._transports = []
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        for agent in self._agents:
            agent.close()
        self._agents = []

    # -- connecting -------------------------------------------------------

    def _connect_chain(self, deadline: Deadline) -> None:
        config = load_config(self.options.config_file)
        chain = resolve_chain(self.target, config, self.options.accept_new)
        previous: TunnelTransport | None = None
        for host in chain:
            sock = self._reach(host, previous, deadline)
            self._connecting = sock if previous is None else None
            if self._closed:
                raise SSHError(f"{self.label}: the session is closed")
            try:
                previous = self._start(host, sock, deadline)
            finally:
                self._connecting = None
            self._transports.append(previous)
            login = Login(
                self.label,
                host,
                previous,
                self.options.keys,
                self.options.asker,
                deadline,
            )
            try:
                login.run()
            finally:
                self._agents += login.agents

    def _reach(
        self, host: HostSettings, through: TunnelTransport | None, deadline: Deadline
    ) -> Any:
        """A connected socket to ``host``: TCP, or a channel through a jump."""
        if through is not None:
            try:
                return through.open_channel(
                    "direct-tcpip",
                    (host.hostname, host.port),
                    ("127.0.0.1", 0),
                    timeout=deadline.left(),
                )
            except paramiko.ChannelException as exc:
                raise SSHUnreachable(
                    f"{self.label}: the jump host cannot connect to {host.address}: "
                    f"{exc.text}"
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._unreachable(host, f"jump failed: {exc}") from None
        if host.proxy_command is not None:
            try:
                self._proxy = ProxyProcess(host.proxy_command)
            except OSError as exc:
                raise self._unreachable(host, f"cannot start it: {exc}") from None
            return self._proxy.socket
        limit = deadline.left()
        if host.connect_timeout is not None:
            limit = min(limit, host.connect_timeout)
        try:
            sock = socket.create_connection((host.hostname, host.port), timeout=limit)
        except socket.gaierror as exc:
            raise self._unreachable(
                host, f"cannot resolve {host.hostname}: {exc.strerror}"
            ) from None
        except TimeoutError:
            raise self._unreachable(host, f"no connection within {limit:g} s") from None
        except OSError as exc:
            raise self._unreachable(host, exc.strerror or str(exc)) from None
        return quick_ack(sock)

    def _start(
        self, host: HostSettings, sock: Any, deadline: Deadline
    ) -> TunnelTransport:
        """Handshake, then the host key check."""
        transport = TunnelTransport(sock)
        remaining = deadline.left()
        transport.banner_timeout = remaining
        transport.handshake_timeout = remaining
        known = known_keys(host)
        security = transport.get_security_options()
        security.key_types = preferred_key_types(known, list(security.key_types))
        security.ciphers = preferred_ciphers(list(security.ciphers))
        try:
            transport.start_client(timeout=remaining)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            ended = self._proxy.failure() if self._proxy is not None else None
            if ended:
                detail = f"it {ended}"
            elif deadline.passed():
                detail = f"no SSH handshake within {self.options.timeout:g} s"
            else:
                detail = f"SSH handshake failed: {exc or type(exc).__name__}"
            raise self._unreachable(host, detail) from None
        try:
            check_host_key(host, key, known, self.options.notice)
        except SSHError as exc:
            transport.close()
            raise type(exc)(f"{self.label}: {exc}") from None
        return transport

    def _unreachable(self, host: HostSettings, detail: str) -> SSHUnreachable:
        via = "" if host.target == self.target else f" (jump host {host.target})"
        if host.proxy_command is not None:
            via += f" via ProxyCommand `{host.proxy_command}`"
        return SSHUnreachable(
            f"{self.label}: cannot connect to {host.address}{via}: {detail}"
        )

    # -- channels ---------------------------------------------------------

    def _open_channel(
        self, endpoint: Endpoint, timeout: float, meanwhile: Callable[[], None]
    ) -> paramiko.Channel:
        transport = self._transports[-1]
        try:
            if endpoint.scheme == "tcp":
                return transport.open_tcp_channel(
                    endpoint.host, endpoint.port, timeout, meanwhile
                )
            path = self._unix_path(endpoint)
            return transport.open_unix_channel(path, timeout, meanwhile)
        except paramiko.ChannelException as exc:
            raise ChannelRefused(
                endpoint.address, self._refusal(endpoint, exc)
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(
                f"{self.label}: cannot open a channel to {endpoint.address}: {exc}"
            ) from None

    def _unix_path(self, endpoint: Endpoint) -> str:
        if endpoint.path.startswith("@"):
            raise InvalidEndpoint(
                f"{endpoint.address}: abstract unix sockets cannot be reached over "
                "SSH; give the daemon an ipc endpoint with a file path"
            )
        if not streamlocal_supported():
            low, high = PARAMIKO_TESTED
            version = ".".join(map(str, paramiko_version()))
            raise SSHError(
                f"{self.label}: ipc endpoints over SSH are tested with paramiko "
                f"{low[0]}.{low[1]} up to before {high[0]}.{high[1]}, not {version}; "
                "use a tcp endpoint or a tested paramiko"
            )
        return endpoint.path

    def _refusal(self, endpoint: Endpoint, exc: paramiko.ChannelException) -> str:
        user = self._user()
        server = f"the SSH server ({self.target})"
        if exc.code == OPEN_ADMINISTRATIVELY_PROHIBITED:
            setting = (
                "AllowStreamLocalForwarding"
                if endpoint.scheme == "ipc"
                else ("AllowTcpForwarding")
            )
            return (
                f"{server} does not allow forwarding for {user} ({setting}, "
                "DisableForwarding, or a restrict/no-port-forwarding key option)"
            )
        # sshd answers "connect failed" for a forbidden forwarding too.
        if endpoint.scheme == "ipc":
            return (
                f"{server} could not connect to {endpoint.path} as {user}: the "
                f"socket does not exist, nothing listens on it, {user} may not "
                "open it, or sshd does not allow forwarding to unix sockets for "
                f"{user}"
            )
        return (
            f"{server} could not connect to {endpoint.host}:{endpoint.port} as "
            f"{user}: nothing listens there, or sshd does not allow TCP "
            f"forwarding for {user}"
        )

    def _user(self) -> str:
        transport = self._transports[-1]
        return str(transport.get_username() or "the login user")
