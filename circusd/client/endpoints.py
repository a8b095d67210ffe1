"""Endpoints of the daemon: parsing, a quick reachability check, and the
default way to connect a ZeroMQ socket to one.

Sockets are made by a Connector. ``connect_socket`` connects directly; an SSH
session (``circusd.client.ssh``) is another Connector that carries the
connection over SSH.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from circusd.client.errors import CallError, DaemonUnreachable, InvalidEndpoint

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"  # Circus's
# The control socket of the packaged circusd (packaging/debian/circusd.ini).
PACKAGED_ENDPOINT = "ipc:///run/circus/ctl.sock"


def default_endpoint() -> str:
    """The packaged daemon's socket where it exists, else Circus's default."""
    if os.path.exists(PACKAGED_ENDPOINT[len("ipc://") :]):
        return PACKAGED_ENDPOINT
    return DEFAULT_ENDPOINT


# sun_path holds 108 bytes, one of them the terminating NUL.
IPC_PATH_LIMIT = 107


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: ``address`` is what ZeroMQ connects to."""

    scheme: str  # "tcp" or "ipc"
    address: str  # the endpoint with a relative ipc path made absolute
    host: str = ""
    port: int = 0
    path: str = ""  # ipc only; starts with "@" for the abstract namespace


class Connector(Protocol):
    """Makes a ZeroMQ socket of ``kind`` connected to ``endpoint``.

    Raises DaemonUnreachable when it can tell, within ``timeout`` seconds,
    that nothing listens there.
    """

    def __call__(
        self, context: zmq.Context[Any], kind: int, endpoint: Endpoint, timeout: float
    ) -> zmq.Socket[Any]: ...


def parse_endpoint(endpoint: str, cwd: str | None = None) -> Endpoint:
    """Check an endpoint and resolve a relative ipc path against ``cwd``.

    Raises InvalidEndpoint with a message that names what is wrong.
    """
    text = endpoint.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("tcp", "ipc") or not rest:
        raise InvalidEndpoint(
            f"invalid endpoint {endpoint!r}: expected tcp://HOST:PORT or ipc://PATH"
        )
    if scheme == "ipc":
        return _parse_ipc(rest, cwd)
    return _parse_tcp(endpoint, rest)


def _parse_ipc(path: str, cwd: str | None) -> Endpoint:
    if not path.startswith("@"):
        path = os.path.abspath(os.path.join(cwd or os.getcwd(), path))
    length = len(os.fsencode(path))
    if length > IPC_PATH_LIMIT:
        raise InvalidEndpoint(
            f"ipc path {path} is too long ({length} bytes): unix socket paths "
            f"are limited to {IPC_PATH_LIMIT} bytes"
        )
    return Endpoint("ipc", f"ipc://{path}", path=path)


def _parse_tcp(endpoint: str, rest: str) -> Endpoint:
    host, sep, port_text = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or host == "*" or not port_text.isdigit():
        raise InvalidEndpoint(
            f"invalid endpoint {endpoint!r}: expected tcp://HOST:PORT"
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidEndpoint(
            f"invalid endpoint {endpoint!r}: port must be between 1 and 65535"
        )
    return Endpoint("tcp", f"tcp://{rest}", host=host, port=port)


def probe(endpoint: Endpoint, timeout: float) -> None:
    """Raise DaemonUnreachable unless something accepts connections on the
    ipc ``endpoint``: it turns "no daemon" into an immediate, precise error
    instead of a timeout.

    A plain stream connection that is closed at once; ZeroMQ drops it without
    a word. A tcp endpoint is not probed that way: circusd could not tell
    such a connection from the real one that follows (both come from the
    same address, and it is the real one circusd has to identify), so there
    ``connect_socket`` watches the ZeroMQ socket's own connection instead.
    """
    if endpoint.scheme == "ipc":
        _probe_ipc(endpoint, timeout)


def _probe_ipc(endpoint: Endpoint, timeout: float) -> None:
    path = endpoint.path
    if not path.startswith("@"):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise DaemonUnreachable(endpoint.address, f"no socket at {path}") from None
        except OSError as exc:
            raise DaemonUnreachable(
                endpoint.address, f"cannot access {path}: {exc.strerror}"
            ) from None
        if not stat.S_ISSOCK(mode):
            raise DaemonUnreachable(endpoint.address, f"{path} is not a socket")
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe_socket:
        probe_socket.settimeout(max(timeout, 0.001))
        try:
            probe_socket.connect(address)
        except PermissionError:
            raise DaemonUnreachable(
                endpoint.address,
                f"permission denied on {path} ({_access_text(path)})",
                why="this user may not connect to it",
            ) from None
        except OSError as exc:
            raise DaemonUnreachable(
                endpoint.address, _connect_failure(exc, path)
            ) from None


def _access_text(path: str) -> str:
    """Who may connect to the socket at ``path``: its owner, group and mode."""
    try:
        info = os.stat(path)
    except OSError:
        return "its owner, group and mode cannot be read"
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"owner {owner}, group {group}, mode {stat.S_IMODE(info.st_mode):04o}"


def tcp_failure(endpoint: Endpoint, timeout: float) -> None:
    """Raise why a tcp connection to ``endpoint`` fails (called once ZeroMQ
    has found that it does); return if it succeeds now."""
    target = f"{endpoint.host}:{endpoint.port}"
    try:
        connection = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=max(timeout, 0.001)
        )
    except socket.gaierror as exc:
        raise DaemonUnreachable(
            endpoint.address, f"cannot resolve {endpoint.host}: {exc.strerror}"
        ) from None
    except OSError as exc:
        raise DaemonUnreachable(
            endpoint.address, _connect_failure(exc, target)
        ) from None
    connection.close()


def _connect_failure(exc: OSError, target: str) -> str:
    if isinstance(exc, TimeoutError) or exc.errno is None:
        return f"connecting to {target} timed out"
    if exc.errno == errno.ECONNREFUSED:
        return f"connection refused at {target}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {target}"
    return f"cannot connect to {target}: {exc.strerror}"


def new_socket(context: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    """A ZeroMQ socket of ``kind`` with the options every client socket needs."""
    sock: zmq.Socket[Any] = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if kind == zmq.DEALER:
        sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
        # Queue requests only on a finished connection, so a request
        # never waits in the client for a daemon that comes back later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def connect_socket(
    context: zmq.Context[Any],
    kind: int,
    endpoint: Endpoint,
    timeout: float,
    prepare: Callable[[zmq.Socket[Any]], None] | None = None,
) -> zmq.Socket[Any]:
    """The default Connector: connect a ZeroMQ socket directly (``prepare``
    sets options on it first, such as CURVE keys). Raises DaemonUnreachable
    at once, with the reason, when nothing accepts connections there."""
    probe(endpoint, timeout)
    sock = new_socket(context, kind)
    if prepare is not None:
        prepare(sock)
    if ":" in endpoint.host:
        sock.setsockopt(zmq.IPV6, 1)  # libzmq refuses IPv6 addresses otherwise
    try:
        if endpoint.scheme == "tcp":
            _connect_tcp(sock, endpoint, timeout)
        else:
            sock.connect(endpoint.address)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise CallError(f"cannot connect to {endpoint.address}: {exc}") from None
    except CallError:
        sock.close(linger=0)
        raise
    return sock


_OUTCOMES = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CLOSED


def _connect_tcp(sock: zmq.Socket[Any], endpoint: Endpoint, timeout: float) -> None:
    """Connect ``sock`` and wait until its tcp connection is made (ZeroMQ's
    handshake goes on by itself); raise the reason if it cannot be."""
    address = f"inproc://circusctl-connect-{uuid.uuid4().hex}"
    sock.monitor(address, _OUTCOMES)
    pair = sock.context.socket(zmq.PAIR)
    events: zmq.Socket[bytes] = zmq.Socket.shadow(pair.underlying)  # never async
    try:
        events.linger = 0
        events.connect(address)
        sock.connect(endpoint.address)
        if events.poll(max(1, int(timeout * 1000))):
            event = int.from_bytes(events.recv_multipart()[0][:2], "little")
            if event != zmq.EVENT_CONNECTED:
                tcp_failure(endpoint, timeout)  # raises the reason
            return  # connected (or the daemon is there now: ZeroMQ retries)
        target = f"{endpoint.host}:{endpoint.port}"
        raise DaemonUnreachable(endpoint.address, f"connecting to {target} timed out")
    finally:
        sock.disable_monitor()
        pair.close(linger=0)
