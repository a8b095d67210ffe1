"""Who is asking: a kernel-verified identity for every control request.

libzmq asks a ZAP handler about every new connection to the control socket
(its ``zap_domain`` is set) and attaches the handler's answer, the
``User-Id``, to every message that connection delivers. The answer is
built here, once per connection, from what the kernel says:

- ipc: the peer's uid, gid and pid (SO_PEERCRED), which libzmq passes as
  the ZAP Address ``localhost:UID:GID:PID`` (libzmq 4.3.4 and 4.3.5 alike);
- tcp from this host: the uid that owns the client's end of the connection,
  which the kernel tells (see ``TcpPeers`` and ``circusd.control.accepts``);
- CURVE: the client's public key, looked up in ``curve_keys_dir``.

A peer can send properties of its own in its ZMTP greeting, but libzmq never
lets them replace one the ZAP handler set, and every ``User-Id`` written
here starts with a random per-daemon token, so a forged one is not read as
an identity. The ZAP handler always accepts NULL connections (an unknown
caller gets a clear "permission denied" reply per request instead of a
silent hang); it refuses only CURVE keys it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pwd
import secrets
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
import zmq.asyncio
import zmq.auth

from circusd.config.checks import UNIX_PATH_MAX, is_loopback
from circusd.config.model import CircusConfig
from circusd.control.accepts import ANY, REMOTE, UNKNOWN, Accepts, Connection, Key
from circusd.control.tcp_diag import (
    _CLOSE_WAIT,
    _ESTABLISHED,
    GREETING,
    Address,
    Lookup,
    _Entry,
    _plain,
    read_tcp_table,
)
from circusd.errors import ConfigError
from circusd.users import group_id

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_DOMAINS = {b"circusd-ipc": "ipc", b"circusd-tcp": "tcp", b"circusd-curve": "curve"}


@dataclass(frozen=True)
class Caller:
    """The peer behind one request. ``uid`` None: it could not be identified."""

    uid: int | None
    gid: int | None = None
    pid: int | None = None
    transport: str = "unknown"  # ipc, tcp, curve, network, unknown
    detail: str = ""  # why unidentified, the CURVE key's name, a peer address

    @property
    def anonymous_network(self) -> bool:
        """A peer on another host, on a tcp endpoint declared insecure."""
        return self.transport == "network"

    def describe(self) -> str:
        uid = "unknown" if self.uid is None else str(self.uid)
        pid = "unknown" if self.pid is None else str(self.pid)
        return f"uid={uid} pid={pid} via={self.transport}"


UNIDENTIFIED = Caller(None, detail="no identity from the transport")
DAEMON_ITSELF = Caller(os.geteuid(), os.getegid(), os.getpid(), "internal")


# -- endpoints ------------------------------------------------------------------


def tcp_host(endpoint: str) -> str | None:
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://") :].rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def check_endpoints(circus: CircusConfig) -> None:
    """Refuse a tcp endpoint that other hosts can reach with nobody identified.

    The control endpoint may listen beyond loopback with CURVE; the event
    and stats streams cannot use CURVE yet. ``insecure_tcp = true`` lifts
    the rule (and peers on other hosts then get every right, as in Circus).
    """
    if circus.insecure_tcp:
        return
    named = {
        "endpoint": circus.endpoint,
        "pubsub_endpoint": circus.pubsub_endpoint,
        "stats_endpoint": circus.stats_endpoint if circus.statsd else None,
    }
    for key, endpoint in named.items():
        host = tcp_host(endpoint or "")
        if host is None or is_loopback(host):
            continue
        if key == "endpoint" and circus.curve_secret_key:
            continue
        how = "set curve_secret_key and curve_keys_dir, " if key == "endpoint" else ""
        raise ConfigError(
            f"{endpoint} listens beyond loopback where callers cannot be "
            f"identified; {how}use ipc or a loopback address, or set "
            "insecure_tcp = true to accept that anyone who reaches it may do "
            "everything",
            section="circus",
            key=key,
        )


# -- the ZAP answer -------------------------------------------------------------


class Identities:
    """Turns a message's ``User-Id`` into a Caller; cached per distinct value."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self._cache: dict[str, Caller] = {}

    def user_id(self, caller: Caller) -> bytes:
        fields = [
            self.token,
            caller.transport,
            "" if caller.uid is None else str(caller.uid),
            "" if caller.gid is None else str(caller.gid),
            "" if caller.pid is None else str(caller.pid),
            caller.detail.replace("|", "/"),
        ]
        return "|".join(fields).encode()

    def of(self, frame: zmq.Frame) -> Caller:
        try:
            text = str(frame.get("User-Id"))
        except zmq.ZMQError:
            return UNIDENTIFIED
        caller = self._cache.get(text)
        if caller is None:
            caller = self._parse(text)
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[text] = caller
        return caller

    def _parse(self, text: str) -> Caller:
        fields = text.split("|")
        if len(fields) != 6 or not secrets.compare_digest(fields[0], self.token):
            return UNIDENTIFIED
        _, transport, uid, gid, pid, detail = fields
        return Caller(_number(uid), _number(gid), _number(pid), transport, detail)


def _number(text: str) -> int | None:
    return int(text) if text.isdecimal() else None


def ipc_peer(address: str) -> Caller:
    """``localhost:UID:GID:PID`` (libzmq's ZAP Address for ipc peers)."""
    parts = address.rsplit(":", 3)
    if len(parts) == 4 and all(part.isdecimal() for part in parts[1:]):
        uid, gid, pid = (int(part) for part in parts[1:])
        return Caller(uid, gid, pid, "ipc")
    return Caller(None, transport="ipc", detail="no peer credentials")


# -- tcp peers on this host -----------------------------------------------------


class TcpPeers:
    """Which local user is behind a new tcp connection, never guessed.

    libzmq's ZAP request names the peer's IP address, not its port, so the
    connection being asked about is one of the connections to our port from
    that address. Each has a key: that address and the uid that owns the
    client's end (when the client is on this host). Answers already given
    are counted per key; the new connection is one of those not answered
    yet. When only one key is left possible, that is the answer; otherwise
    the connection stays unidentified (its requests are refused, the client
    may retry).

    The connections come from the monitor of each socket ``watch``ed
    (``circusd.control.accepts``), which sees every connection accepted,
    even one that is gone by the time it is asked about: such a connection
    keeps counting until every ZAP request waiting when it went away has
    been answered (``settled``), since one of them may be about it. Then its
    key's count of answers is lowered, as if it had been answered, so the
    possibilities are never narrowed beyond what is certain. Without a
    watched socket, the connections are read from the kernel's table at
    each request (``read_table``; that cannot see a connection that came
    and went between two requests).
    """

    def __init__(self, read_table: Any = read_tcp_table) -> None:
        self._read = read_table
        self._listening: list[Address] = []
        self._answered: dict[Key, int] = {}
        self._seen: dict[int, Key] = {}
        self._accepts: list[Accepts] = []
        self._gone: list[Connection] = []
        self._lookup = Lookup()

    def listen(self, host: bytes, port: int) -> None:
        self._listening.append((_plain(host), port))

    def watch(self, sock: zmq.Socket[Any]) -> None:
        """Follow the connections ``sock`` accepts; call before binding it."""
        self._accepts.append(Accepts(sock, self._ours, self._find))

    def _ours(self, local: Address) -> bool:
        return any(
            port == local[1] and (host == local[0] or not host.strip(b"\0"))
            for host, port in self._listening
        )

    def _find(self, local: Address, remote: Address) -> _Entry | None:
        try:
            return self._lookup.find(local, remote)
        except OSError as exc:
            log.debug("sock_diag lookup failed, reading the table error=%s", exc)
            table = self._read()
            return next(
                (e for e in table if (e.local, e.remote) == (local, remote)), None
            )

    def identify(
        self,
        address: str,
        insecure: bool,
        enough: Callable[[Caller], bool] | None = None,
    ) -> Caller:
        """The caller behind the connection being asked about. With
        ``enough`` (a question only about what the caller may do), when
        several users are possible and ``enough`` holds for every one of
        them, one of them is answered: the answer would be the same."""
        try:
            peer = _plain(ipaddress.ip_address(address).packed)
        except ValueError:
            return Caller(None, transport="tcp", detail=f"bad address {address!r}")
        if self._accepts:
            possible = self._possible_watched(peer)
        else:
            possible = self._possible(peer, self._table_keys())
        callers = [_tcp_caller(key[1], address, insecure) for key in possible]
        alike = len(possible) > 1 and enough is not None and all(map(enough, callers))
        if len(possible) != 1 and not alike:
            return Caller(
                None,
                transport="tcp",
                detail="several local users connected at the same moment",
            )
        key = possible[0]
        self._answered[key] = self._answered.get(key, 0) + 1
        return callers[0]

    def _possible(self, peer: bytes, keys: list[Key]) -> list[Key]:
        counts: dict[Key, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        return [
            key
            for key, count in counts.items()
            if key[0] in (peer, ANY) and count > self._answered.get(key, 0)
        ]

    def _possible_watched(self, peer: bytes) -> list[Key]:
        self.update()
        live = [c for accepts in self._accepts for c in accepts.live()]
        keys = [c.key for c in live + self._gone if c.key[0] in (peer, ANY)]
        return self._possible(peer, keys)

    def update(self) -> None:
        """Take in what the monitors of the watched sockets report."""
        for accepts in self._accepts:
            self._gone += accepts.update()

    async def follow(self) -> None:
        """Take in the monitors' reports as they come (so that a connection
        libzmq closed is not held open by a descriptor kept here)."""
        await asyncio.gather(*(self._follow(accepts) for accepts in self._accepts))

    async def _follow(self, accepts: Accepts) -> None:
        while True:
            await accepts.wait()
            self.update()

    def settled(self) -> None:
        """No ZAP request is waiting: none can be about a connection gone."""
        for connection in self._gone:
            if self._answered.get(connection.key):
                self._answered[connection.key] -= 1
        self._gone = []

    def _table_keys(self) -> list[Key]:
        table = self._read()
        clients = {
            (e.local, e.remote): e.uid
            for e in table
            if e.state == _ESTABLISHED and e.inode
        }
        keys: dict[int, Key] = {}
        for entry in table:
            if entry.state in (_ESTABLISHED, _CLOSE_WAIT) and self._ours(entry.local):
                if entry.received is not None and entry.received < GREETING:
                    continue  # not asked about yet (a connection left idle)
                uid = clients.get((entry.remote, entry.local))
                if uid is not None:
                    keys[entry.inode] = (entry.remote[0], uid)
                elif entry.inode in self._seen:  # its client has closed since
                    keys[entry.inode] = self._seen[entry.inode]
                elif entry.state == _ESTABLISHED:
                    keys[entry.inode] = (entry.remote[0], REMOTE)
                # else closed by its client before it was asked about: what
                # it is told no longer matters, and it must not count as a
                # peer on another host beside the one being asked about.
        self._forget(keys)
        return list(keys.values())

    def _forget(self, current: dict[int, Key]) -> None:
        for inode, key in self._seen.items():
            if inode not in current and self._answered.get(key):
                self._answered[key] -= 1
        self._seen = current

    def close(self) -> None:
        for accepts in self._accepts:
            accepts.close()
        self._lookup.close()


def _tcp_caller(uid: int, address: str, insecure: bool) -> Caller:
    if uid == REMOTE:
        if insecure:
            return Caller(None, transport="network", detail=address)
        return Caller(None, transport="tcp", detail="peer not on this host")
    if uid == UNKNOWN:
        return Caller(None, transport="tcp", detail="client gone before it was seen")
    return Caller(uid, transport="tcp", detail=address)


# -- CURVE ----------------------------------------------------------------------


class CurveKeys:
    """``curve_keys_dir``: one public certificate per file, ``USER.key`` or
    ``USER@LABEL.key``; read again whenever the directory changes."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._stamp: tuple[int, int] | None = None
        self._users: dict[bytes, str] = {}

    def user(self, public_key: bytes) -> str | None:
        if self.directory is None:
            return None
        try:
            info = os.stat(self.directory)
        except OSError as exc:
            log.error("cannot read curve_keys_dir=%s error=%s", self.directory, exc)
            return None
        if (info.st_mtime_ns, info.st_ino) != self._stamp:
            self._users = self._load(self.directory)
            self._stamp = (info.st_mtime_ns, info.st_ino)
        return self._users.get(public_key)

    @staticmethod
    def _load(directory: str) -> dict[bytes, str]:
        users: dict[bytes, str] = {}
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".key") or name.startswith("."):
                continue
            try:
                public, _ = zmq.auth.load_certificate(os.path.join(directory, name))
            except (OSError, ValueError) as exc:
                log.warning("curve key skipped file=%s error=%s", name, exc)
                continue
            users[zmq.utils.z85.decode(public)] = name[:-4].split("@")[0]
        return users


def load_server_key(path: str) -> tuple[bytes, bytes]:
    info = os.stat(path)
    if info.st_mode & 0o007:
        raise ConfigError(
            f"{path} is readable or writable by every user; the CURVE secret "
            "key must be mode 0600 or 0640",
            section="circus",
            key="curve_secret_key",
        )
    public, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise ConfigError(
            f"{path} holds no secret-key", section="circus", key="curve_secret_key"
        )
    return public, secret


async def serve_zap(
    zap: zmq.asyncio.Socket,
    answer: Callable[[list[bytes]], list[bytes]],
    on_error: tuple[bytes, bytes, bytes],
    settled: Callable[[], None] = lambda: None,
) -> None:
    """Answer ZAP requests on ``zap`` with ``answer`` until it is closed.

    A handshake is never left waiting: if ``answer`` fails, the reply is
    ``on_error`` (status code, status text, user id) and the failure logged.
    ``settled`` is called whenever no request is left waiting.
    """
    while True:
        try:
            request = await zap.recv_multipart()
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                return
            raise
        try:
            reply = answer(request)
        except Exception:
            log.exception("identifying a peer failed")
            request_id = request[1] if len(request) > 1 else b""
            reply = [b"1.0", request_id, *on_error, b""]
        await zap.send_multipart(reply)
        if not await zap.poll(0):  # through pyzmq, which watches the socket too
            settled()


# -- the guard: binding, ZAP, socket files -------------------------------------


class StreamAnswers(Protocol):
    """ZAP answers for the connections to a stream (``subscribers``)."""

    def answers(self, domain: bytes) -> bool: ...

    def answer(self, request: list[bytes]) -> list[bytes]: ...

    @property
    def tcp_peers(self) -> TcpPeers: ...


class Guard:
    """Everything the control channel needs to know who is calling."""

    def __init__(self, circus: CircusConfig, context: zmq.asyncio.Context) -> None:
        check_endpoints(circus)
        self.circus = circus
        self.identities = Identities()
        self.tcp_peers = TcpPeers()
        self.owner_uid = owner_uid(circus.endpoint_owner)
        self.readonly_gid = (
            group_id(circus.readonly_group) if circus.readonly_group else None
        )
        self.curve: tuple[bytes, bytes] | None = None
        if circus.curve_secret_key:
            self.curve = load_server_key(circus.curve_secret_key)
        self.keys = CurveKeys(circus.curve_keys_dir)
        # The event stream shares the daemon's context, so its ZAP handler.
        self.streams: list[StreamAnswers] = []
        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(ZAP_ENDPOINT)

    # -- binding ------------------------------------------------------------------

    def bind(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Bind the control socket so that every connection goes through ZAP;
        an ipc socket file appears with its final owner and mode."""
        host = tcp_host(endpoint)
        if self.curve is not None:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self.curve
            sock.zap_domain = b"circusd-curve"
        else:
            sock.zap_domain = b"circusd-tcp" if host is not None else b"circusd-ipc"
        if host is not None and self.curve is None:
            self.tcp_peers.watch(sock)
        self.bind_file(sock, endpoint)
        if host is not None:
            self._listen_on(sock)

    def bind_file(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Bind ``endpoint``; an ipc socket file has its final owner and mode
        from the first moment it exists (see stage_socket_file)."""
        path = endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None
        adopted = getattr(sock.context, "adopts", lambda _: False)(endpoint)
        if path is None or path.startswith("@") or adopted:
            sock.bind(endpoint)
        else:
            self._bind_ipc(sock, path)

    def _listen_on(self, sock: zmq.Socket[Any]) -> None:
        self.tcp_peers.listen(*bound_tcp_address(sock))

    def socket_file_mode(self) -> tuple[int, int, int]:
        """Owner uid, group gid and mode of the control and event sockets."""
        uid = self.owner_uid if self.owner_uid is not None else os.geteuid()
        if self.readonly_gid is not None:
            return uid, self.readonly_gid, 0o660
        return uid, os.getegid(), 0o600

    def _bind_ipc(self, sock: zmq.Socket[Any], path: str) -> None:
        staged = self.stage_socket_file(
            path,
            lambda at: sock.bind("ipc://" + at),
            lambda at: sock.unbind("ipc://" + at),
        )
        if not staged:
            self._bind_in_place(sock, path)

    def stage_socket_file(
        self, path: str, bind_at: Callable[[str], Any], undo: Callable[[str], Any]
    ) -> bool:
        """Bind in a fresh 0700 directory beside ``path``, set owner and mode
        there, then link the socket into place: nobody can see the file
        before it has its final owner and mode, and an existing file at
        ``path`` is never replaced. False when ``path`` is too long to stage
        (nothing was bound)."""
        check_socket_directory(path)
        uid, gid, mode = self.socket_file_mode()
        directory = os.path.dirname(path) or "."
        private = os.path.join(directory, "." + secrets.token_hex(3))
        staged = os.path.join(private, "s")
        if len(os.fsencode(staged)) > UNIX_PATH_MAX:
            return False
        os.mkdir(private, 0o700)
        try:
            with _umask(0o777 & ~mode):
                bind_at(staged)
            os.chown(staged, uid, gid, follow_symlinks=False)
            os.chmod(staged, mode)
            try:
                os.link(staged, path, follow_symlinks=False)
            except FileExistsError:
                undo(staged)
                raise ConfigError(
                    f"endpoint path {path} appeared while binding"
                ) from None
            os.unlink(staged)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            with contextlib.suppress(OSError):
                os.rmdir(private)
        return True

    def listening_socket(self, path: str, backlog: int = 128) -> socket.socket:
        """A plain unix stream socket listening at ``path``, whose file has
        the endpoints' owner and mode from the first moment (for a ZeroMQ
        endpoint served by another process, see circusd.metrics)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if not self.stage_socket_file(path, sock.bind, lambda _: None):
                _, _, mode = self.socket_file_mode()
                with _umask(0o077 | (0o777 & ~mode)):
                    sock.bind(path)
                self.place("ipc://" + path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def _bind_in_place(self, sock: zmq.Socket[Any], path: str) -> None:
        # Too long for a staging directory: bound with no permission for
        # anyone but circusd, then given to its owner; never wider.
        uid, gid, mode = self.socket_file_mode()
        with _umask(0o077 | (0o777 & ~mode)):
            sock.bind("ipc://" + path)
        self.place("ipc://" + path)

    def place(self, endpoint: str | None) -> None:
        """Give an ipc socket file that was already bound (the event stream)
        its owner and mode."""
        if not endpoint or not endpoint.startswith("ipc://"):
            return
        path = endpoint[len("ipc://") :]
        if path.startswith("@"):
            return
        uid, gid, mode = self.socket_file_mode()
        os.chown(path, uid, gid, follow_symlinks=False)
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode):
            os.chmod(path, mode)

    # -- ZAP ----------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer libzmq's ZAP requests until the context ends. A failure
        leaves the caller unidentified, so its requests are refused."""
        unidentified = self.identities.user_id(UNIDENTIFIED)
        peers = [self.tcp_peers, *(stream.tcp_peers for stream in self.streams)]
        following = asyncio.gather(*(p.follow() for p in peers))
        try:
            await serve_zap(
                self._zap, self.answer, (b"200", b"OK", unidentified), self._settled
            )
        finally:
            following.cancel()

    def _settled(self) -> None:
        self.tcp_peers.settled()
        for stream in self.streams:
            stream.tcp_peers.settled()

    def answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != b"1.0":
            version = request[0] if request else b"1.0"
            request_id = request[1] if len(request) > 1 else b""
            return [version, request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _, mechanism = request[:6]
        for stream in self.streams:
            if stream.answers(domain):
                return stream.answer(request)
        transport = _DOMAINS.get(domain)
        status, text, caller = b"200", b"OK", UNIDENTIFIED
        peer = address.decode("ascii", "replace")
        if transport == "ipc" and mechanism == b"NULL":
            caller = ipc_peer(peer)
        elif transport == "tcp" and mechanism == b"NULL":
            caller = self.tcp_peers.identify(peer, self.circus.insecure_tcp)
        elif transport == "curve" and mechanism == b"CURVE" and len(request) > 6:
            caller = self._curve_peer(request[6], peer)
            if caller.uid is None:
                status, text = b"400", b"unknown key"
        else:
            status, text = b"400", b"not a circusd endpoint"
        if caller.uid is None and status == b"200":
            log.info(
                "peer not identified %s reason=%r", caller.describe(), caller.detail
            )
        return [version, request_id, status, text, self.identities.user_id(caller), b""]

    def _curve_peer(self, public_key: bytes, address: str) -> Caller:
        name = self.keys.user(public_key)
        key_text = zmq.utils.z85.encode(public_key).decode()
        if name is None:
            log.warning("curve key refused key=%s peer=%s", key_text, address)
            return Caller(None, transport="curve", detail="unknown key")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            log.warning("curve key names no user key=%s user=%s", key_text, name)
            return Caller(None, transport="curve", detail=f"no user {name!r}")
        return Caller(entry.pw_uid, entry.pw_gid, None, "curve", f"{name}@{address}")

    def caller(self, frame: zmq.Frame) -> Caller:
        return self.identities.of(frame)

    def close(self) -> None:
        self.tcp_peers.close()
        for stream in self.streams:
            stream.tcp_peers.close()
        self._zap.close()


def bound_tcp_address(sock: zmq.Socket[Any]) -> tuple[bytes, int]:
    """The packed host and the port a socket bound on tcp listens at."""
    bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    host, _, port = bound[len("tcp://") :].rpartition(":")
    return ipaddress.ip_address(host.strip("[]")).packed, int(port)


def owner_uid(value: str | int | None) -> int | None:
    """``endpoint_owner`` as a uid: a name or a number, the same user either way."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.isdecimal():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise ConfigError(
            f"unknown user {text!r}", section="circus", key="endpoint_owner"
        ) from None


def check_socket_directory(path: str) -> None:
    """Refuse a directory where another user could replace the socket file."""
    directory = os.path.dirname(path) or "."
    info = os.stat(directory)
    writable_by_others = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
    trusted = info.st_uid in (0, os.geteuid())
    if writable_by_others or not trusted:
        raise ConfigError(
            f"the directory of endpoint path {path} ({stat.filemode(info.st_mode)} "
            f"uid {info.st_uid}) lets other users replace the socket; use a "
            "directory that only root or circusd's user can write to",
            section="circus",
        )


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
