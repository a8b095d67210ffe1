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

import contextlib
import ipaddress
import logging
import os
import pwd
import secrets
import socket
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
import zmq.asyncio
import zmq.auth

from circusd.config.checks import UNIX_PATH_MAX, is_loopback
from circusd.config.model import CircusConfig
from circusd.control.accepts import ANY, REMOTE, UNKNOWN, Accepts, Connection
from circusd.control.tcp_diag import (
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
TICKET = "tcp-ticket"  # a tcp connection's ZAP answer, until its first message
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
    that address that no earlier request was about. Each connection has a
    key: that address and the uid that owns the client's end (when the
    client is on this host). Each answer given is remembered with the
    connections it may have been about; a connection is possible for a new
    request when every earlier answer can still be about another connection
    (one each). When the possible connections all have one key, that is the
    answer; otherwise the connection stays unidentified (its requests are
    refused, the client may retry), and the answer still takes one of them.

    The connections come from the monitor of each socket ``watch``ed
    (``circusd.control.accepts``), which sees every connection accepted,
    even one that is gone by the time it is asked about, and even one gone
    before its owner could be read: such a connection keeps counting (as a
    connection of an unknown user, from any address) until no ZAP request
    is waiting (``settled``), since one of them may be about it. libzmq
    sends the request about a connection before it reports the connection
    gone, so once the report is read and no request waits, none will come
    about it. Then an answer it may have had is forgotten, as if it had
    had one, so the possibilities are never narrowed beyond what is
    certain. A socket that is not watched has no caller known over tcp.
    """

    def __init__(self, tickets: bool = False) -> None:
        """``tickets``: the connections are identified by ticket (``ticket``,
        ``redeem``) rather than by ``identify``."""
        self._tickets_only = tickets
        self._listening: list[Address] = []
        self._answers: list[set[Connection]] = []  # what each may have been about
        self._accepts: list[Accepts] = []
        self._gone: list[Connection] = []
        self._lookup = Lookup()
        self._issued = 0
        self._tickets: dict[int, tuple[list[int], str]] = {}  # serials, address
        self._redeemed: dict[int, tuple[Connection, Caller]] = {}
        self._ticket_of: dict[Connection, int] = {}

    def listen(self, host: bytes, port: int) -> None:
        self._listening.append((_plain(host), port))

    def watch(self, sock: zmq.Socket[Any]) -> None:
        """Follow the connections ``sock`` accepts; call before binding it."""
        self.add(Accepts(sock, self._ours, self._find, not self._tickets_only))

    def add(self, accepts: Accepts) -> None:
        """Follow the connections that ``accepts`` reports."""
        self._accepts.append(accepts)

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
            table = read_tcp_table()
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
        possible = self._possible(peer)
        keys = list(dict.fromkeys(c.key for c in possible))
        callers = [_tcp_caller(key[1], address, insecure) for key in keys]
        if possible:
            self._answers.append(set(possible))
        alike = len(keys) > 1 and enough is not None and all(map(enough, callers))
        if len(keys) != 1 and not alike:
            return Caller(
                None,
                transport="tcp",
                detail="several local users connected at the same moment",
            )
        return callers[0]

    def _possible(self, peer: bytes) -> list[Connection]:
        """The connections from ``peer`` that no answer given was about."""
        self.update()
        live = [c for accepts in self._accepts for c in accepts.live()]
        taken = {next(iter(a)) for a in self._answers if len(a) == 1}
        # (an answer left with no connection of its own is one that a gone
        # connection's was mistaken for: it no longer narrows anything)
        unsure = [a - taken for a in self._answers if len(a) > 1 and a - taken]
        candidates = [
            c for c in live + self._gone if c.key[0] in (peer, ANY) and c not in taken
        ]
        if not unsure or len(unsure) > MAX_UNSURE:  # (too many: all stay possible)
            return candidates
        return [c for c in candidates if _assignable(unsure, c)]

    def update(self) -> None:
        """Take in what the monitors of the watched sockets report."""
        for accepts in self._accepts:
            gone = accepts.update()
            for connection in gone:
                self._redeemed.pop(self._ticket_of.pop(connection, 0), None)
            self._gone += gone

    # The control socket's connections are identified exactly instead: the
    # ZAP answer is a ticket, and the connection's first message, whose
    # descriptor libzmq tells (ZMQ_SRCFD), redeems it. The connection a
    # ticket was given for had been seen when the ticket was made (libzmq
    # reports a connection before it asks about it); a descriptor that
    # shows a connection seen later was reused after the ticket's own
    # connection had ended, and redeems nothing.

    def ticket(self, address: str) -> int:
        """A ticket for the connection from ``address`` being asked about."""
        self.update()
        self._issued += 1
        self._tickets[self._issued] = ([a.serial for a in self._accepts], address)
        if len(self._tickets) > MAX_TICKETS_UNCHECKED:
            self._forget_tickets()
        return self._issued

    def redeem(self, ticket: int, fd: int, insecure: bool) -> Caller:
        """The caller behind the connection holding ``ticket``, whose message
        came from descriptor ``fd``."""
        known = self._redeemed.get(ticket)
        if known is not None:
            return known[1]
        issued = self._tickets.pop(ticket, None)
        if issued is None:
            return Caller(None, transport="tcp", detail="ticket unknown")
        serials, address = issued
        # No update: the reports read so far are all that matter. If the
        # descriptor was reused and that is not read yet, the connection
        # shown is still the one the message came from.
        for accepts, serial in zip(self._accepts, serials, strict=True):
            found = accepts.on(fd)
            if found is not None and found[0] <= serial:
                connection = found[1]
                caller = _tcp_caller(connection.key[1], address, insecure)
                self._redeemed[ticket] = (connection, caller)
                self._ticket_of[connection] = ticket
                return caller
        return Caller(None, transport="tcp", detail="connection gone")

    def redeemed(self, ticket: int) -> bool:
        return ticket in self._redeemed

    def _forget_tickets(self) -> None:
        """Tickets whose connections are all gone (never redeemed)."""
        oldest = [accepts.oldest() for accepts in self._accepts]
        self._tickets = {
            ticket: issued
            for ticket, issued in self._tickets.items()
            if any(s >= first for s, first in zip(issued[0], oldest, strict=True))
        }

    def reports(self) -> list[zmq.Socket[Any]]:
        """The sockets on which the monitors' reports arrive."""
        return [accepts.reports for accepts in self._accepts]

    def settled(self) -> None:
        """No ZAP request is waiting: none can be about a connection gone."""
        for connection in self._gone:
            holding = [a for a in self._answers if connection in a]
            if holding:  # the one most likely about it
                self._answers.remove(min(holding, key=len))
            for answer in holding:
                answer.discard(connection)
        self._answers = [a for a in self._answers if a]
        self._gone = []

    def close(self) -> None:
        for accepts in self._accepts:
            accepts.close()
        self._lookup.close()


MAX_TICKETS_UNCHECKED = 64  # tickets kept before those of gone connections go
MAX_UNSURE = 64  # answers that may each be about one of several connections


def _assignable(answers: list[set[Connection]], spared: Connection) -> bool:
    """Whether each answer can be about a connection of its own, each a
    different one and none ``spared`` (a matching, by augmenting paths)."""
    about: dict[Connection, int] = {}

    def place(i: int, tried: set[Connection]) -> bool:
        for connection in answers[i] - tried:
            tried.add(connection)
            if connection is spared:
                continue
            if connection not in about or place(about[connection], tried):
                about[connection] = i
                return True
        return False

    return all(place(i, set()) for i in range(len(answers)))


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
    peers: Sequence[TcpPeers] = (),
) -> None:
    """Answer ZAP requests on ``zap`` with ``answer`` until it is closed, and
    take in the reports about the connections of ``peers`` as they come (so
    that a connection libzmq closed is not held open by a descriptor kept
    there).

    A handshake is never left waiting: if ``answer`` fails, the reply is
    ``on_error`` (status code, status text, user id) and the failure logged.
    Once every request waiting is answered, the peers' connections gone are
    let go (``TcpPeers.settled``): the reports of them were read before the
    socket was found empty, and libzmq sends a request about a connection
    before it reports the connection gone.
    """
    poller = zmq.asyncio.Poller()
    poller.register(zap, zmq.POLLIN)
    for reports in (sock for tcp_peers in peers for sock in tcp_peers.reports()):
        poller.register(reports, zmq.POLLIN)
    while True:
        try:
            await poller.poll()
            for tcp_peers in peers:
                tcp_peers.update()
            # (the poller asks the socket itself again before it waits)
            if not int(zap.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                for tcp_peers in peers:
                    tcp_peers.settled()
            while await _answer_waiting(zap, answer, on_error):
                pass
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                return
            raise
        for tcp_peers in peers:
            tcp_peers.settled()


async def _answer_waiting(
    zap: zmq.asyncio.Socket,
    answer: Callable[[list[bytes]], list[bytes]],
    on_error: tuple[bytes, bytes, bytes],
) -> bool:
    """Answer the request waiting on ``zap``, if one is; whether one was."""
    try:
        request = await zap.recv_multipart(zmq.NOBLOCK)  # done at once
    except zmq.Again:
        return False
    try:
        reply = answer(request)
    except Exception:
        log.exception("identifying a peer failed")
        request_id = request[1] if len(request) > 1 else b""
        reply = [b"1.0", request_id, *on_error, b""]
    await zap.send_multipart(reply)  # a REP socket sends at once
    return True


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
        self.tcp_peers = TcpPeers(tickets=True)
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
        await serve_zap(self._zap, self.answer, (b"200", b"OK", unidentified), peers)

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
            ticket = self.tcp_peers.ticket(peer)
            caller = Caller(None, transport=TICKET, detail=str(ticket))
        elif transport == "curve" and mechanism == b"CURVE" and len(request) > 6:
            caller = self._curve_peer(request[6], peer)
            if caller.uid is None:
                status, text = b"400", b"unknown key"
        else:
            status, text = b"400", b"not a circusd endpoint"
        if caller.uid is None and status == b"200" and transport != "tcp":
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
        caller = self.identities.of(frame)
        if caller.transport != TICKET:
            return caller
        try:
            source = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            source = -1
        fd = source if isinstance(source, int) else -1
        first = not self.tcp_peers.redeemed(int(caller.detail))
        caller = self.tcp_peers.redeem(int(caller.detail), fd, self.circus.insecure_tcp)
        if first and caller.uid is None and not caller.anonymous_network:
            log.info(
                "peer not identified %s reason=%r", caller.describe(), caller.detail
            )
        return caller

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
