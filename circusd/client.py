"""A blocking client for the control and event channels of circusd (and Circus).

The control channel is a ZeroMQ ROUTER on the daemon's side; the client is a
DEALER with a random identity that sends one JSON frame per request and
matches the reply by its ``id``. Every call is bounded by one deadline: late
replies to earlier calls are dropped without extending it.

Sockets are made by one function, ``connect_socket``. Anything that can hand
back a connected ZeroMQ socket (an SSH tunnel, for one) can replace it through
the ``connect`` argument of ``CircusClient`` and ``subscribe``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import zmq

from circusd.errors import CircusdError

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
# sun_path holds 108 bytes, one of them the terminating NUL.
IPC_PATH_LIMIT = 107
_NOT_RUNNING = "the daemon is not running or not reachable"


class CallError(CircusdError):
    """A call to the daemon that did not produce a successful reply."""


class InvalidEndpoint(CallError):
    """The endpoint cannot be used at all (bad scheme, port, or path length)."""


class DaemonUnreachable(CallError):
    """Nothing answered on the endpoint: no socket, refused, or no reply in time."""

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(f"cannot reach {endpoint}: {detail}; {_NOT_RUNNING}")
        self.endpoint = endpoint
        self.detail = detail


class CallTimeout(DaemonUnreachable):
    """The request was sent but no matching reply came before the deadline."""


class ReplyError(CallError):
    """The daemon answered with ``status: error``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.reason = str(reply.get("reason") or "unspecified error")
        errno_value = reply.get("errno", 0)
        self.errno = errno_value if isinstance(errno_value, int) else 0
        super().__init__(self.reason)


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
    """Raise DaemonUnreachable unless something accepts connections there.

    A plain stream connection that is closed at once; ZeroMQ drops it without
    a word. It turns "no daemon" into an immediate, precise error instead of
    a timeout.
    """
    if endpoint.scheme == "ipc":
        _probe_ipc(endpoint, timeout)
    else:
        _probe_tcp(endpoint, timeout)


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
        except OSError as exc:
            raise DaemonUnreachable(
                endpoint.address, _connect_failure(exc, path)
            ) from None


def _probe_tcp(endpoint: Endpoint, timeout: float) -> None:
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


def connect_socket(
    context: zmq.Context[Any], kind: int, endpoint: Endpoint, timeout: float
) -> zmq.Socket[Any]:
    """The default Connector: probe, then connect a ZeroMQ socket directly."""
    probe(endpoint, timeout)
    sock: zmq.Socket[Any] = context.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.DEALER:
            sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
            # Queue requests only on a finished connection, so a request
            # never waits in the client for a daemon that comes back later.
            sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(endpoint.address)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise CallError(f"cannot connect to {endpoint.address}: {exc}") from None
    return sock


class CircusClient:
    """A synchronous client for the control endpoint.

    ``call`` returns the reply as a dict or raises a CallError subclass. The
    connection is made at the first call; after a timeout it is dropped and
    made again, so an unanswered request is never delivered late.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        *,
        connect: Connector = connect_socket,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.endpoint = parse_endpoint(endpoint)
        self.timeout = timeout
        self._connect = connect
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._cast_pending = False

    def __enter__(self) -> CircusClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket; waits up to ``timeout`` only to deliver casts."""
        if self._socket is None:
            return
        linger = int(self.timeout * 1000) if self._cast_pending else 0
        self._socket.close(linger=linger)
        self._socket = None
        self._cast_pending = False

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send ``command`` and return the reply whose id matches.

        Raises ReplyError for ``status: error``, DaemonUnreachable (CallTimeout
        after sending) when nothing answers in ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        request_id = uuid.uuid4().hex
        message = {"command": command, "properties": properties, "id": request_id}
        sock = self._send(message, deadline)
        try:
            reply = self._receive(sock, request_id, deadline)
        except CallTimeout:
            self._drop_socket()
            raise
        if reply.get("status") == "error":
            raise ReplyError(reply)
        return reply

    def cast(self, command: str, **properties: Any) -> None:
        """Send ``command`` without waiting for, or getting, a reply."""
        message = {"command": command, "properties": properties, "msg_type": "cast"}
        self._send(message, time.monotonic() + self.timeout)
        self._cast_pending = True

    def _ensure_socket(self, deadline: float) -> zmq.Socket[Any]:
        if self._socket is None:
            remaining = max(deadline - time.monotonic(), 0.001)
            self._socket = self._connect(
                self._context, zmq.DEALER, self.endpoint, remaining
            )
        return self._socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
            self._cast_pending = False

    def _send(self, message: dict[str, Any], deadline: float) -> zmq.Socket[Any]:
        try:
            payload = json.dumps(message).encode()
        except (TypeError, ValueError) as exc:
            raise CallError(f"cannot encode {message['command']!r}: {exc}") from None
        sock = self._ensure_socket(deadline)
        try:
            if not sock.poll(_milliseconds_left(deadline), zmq.POLLOUT):
                self._drop_socket()
                raise CallTimeout(
                    self.endpoint.address,
                    f"no answer within {self.timeout:g} s (connection not completed)",
                )
            sock.send(payload, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._drop_socket()
            raise CallError(f"cannot send to {self.endpoint.address}: {exc}") from None
        return sock

    def _receive(
        self, sock: zmq.Socket[Any], request_id: str, deadline: float
    ) -> dict[str, Any]:
        while True:
            remaining = _milliseconds_left(deadline)
            try:
                if remaining == 0 or not sock.poll(remaining, zmq.POLLIN):
                    raise CallTimeout(
                        self.endpoint.address,
                        f"no reply within {self.timeout:g} s",
                    )
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                self._drop_socket()
                raise CallError(
                    f"cannot receive from {self.endpoint.address}: {exc}"
                ) from None
            reply = _decode_reply(frames, self.endpoint.address)
            if reply.get("id") == request_id:
                return reply
            logger.debug(
                "discarded reply id=%r expected=%s", reply.get("id"), request_id
            )


def _milliseconds_left(deadline: float) -> int:
    return max(int((deadline - time.monotonic()) * 1000), 0)


def _decode_reply(frames: Sequence[bytes], address: str) -> dict[str, Any]:
    try:
        reply = json.loads(frames[-1])
    except (ValueError, IndexError):
        raise CallError(f"invalid reply from {address}: not JSON") from None
    if not isinstance(reply, dict):
        raise CallError(f"invalid reply from {address}: not a JSON object")
    return reply


@dataclass(frozen=True)
class Event:
    """One message of the event stream: ``watcher.<name>.<event>`` and its data."""

    topic: str
    data: dict[str, Any]

    @property
    def watcher(self) -> str | None:
        parts = self.topic.split(".")
        return ".".join(parts[1:-1]) if len(parts) >= 3 else None

    @property
    def event(self) -> str:
        return self.topic.rsplit(".", 1)[-1]


def subscribe(
    endpoint: str,
    topics: Sequence[str] = ("",),
    *,
    timeout: float = 5.0,
    connect: Connector = connect_socket,
    context: zmq.Context[Any] | None = None,
) -> Generator[Event, None, None]:
    """Yield the events published on ``endpoint`` whose topic starts with one of
    ``topics`` (all events by default), until the caller stops iterating.

    ``timeout`` bounds only the connection check; the stream itself waits for
    as long as it takes. Raises DaemonUnreachable or InvalidEndpoint before the
    first event when the endpoint cannot be used.
    """
    parsed = parse_endpoint(endpoint)
    sock = connect(context or zmq.Context.instance(), zmq.SUB, parsed, timeout)
    return _events(sock, list(topics) or [""])


def _events(sock: zmq.Socket[Any], topics: list[str]) -> Generator[Event, None, None]:
    try:
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        while True:
            frames = sock.recv_multipart()
            if len(frames) != 2:
                logger.debug("ignored event frames=%d", len(frames))
                continue
            topic_bytes, payload = frames
            try:
                data = json.loads(payload)
            except ValueError:
                data = {"raw": payload.decode(errors="replace")}
            if not isinstance(data, dict):
                data = {"value": data}
            yield Event(topic_bytes.decode(errors="replace"), data)
    finally:
        sock.close(linger=0)
