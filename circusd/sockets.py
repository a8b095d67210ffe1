"""Listening sockets that circusd binds once and hands to its children.

A ``[socket:NAME]`` can also come from systemd (socket activation with
``FileDescriptorName=NAME``): the daemon offers the passed fds to
``passed_sockets`` at start, and ``CircusSocket.bind`` adopts one whose name
matches, after checking it is the socket the section describes, instead of
binding a new one. The passed fd stays open for the daemon's whole life, so a
section that is closed and bound again on reload gets the same socket back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from circusd.config.model import SocketConfig
from circusd.errors import CircusdError

log = logging.getLogger(__name__)


class SocketError(CircusdError):
    pass


def _constant(name: str, what: str) -> int:
    value = getattr(socket, name.upper(), None)
    if not isinstance(value, int):
        raise SocketError(f"unknown socket {what} {name!r}")
    return value


_FAMILY_WORDS: dict[int, str] = {
    socket.AF_UNIX: "unix",
    socket.AF_INET: "ipv4",
    socket.AF_INET6: "ipv6",
}
_KIND_WORDS: dict[int, str] = {
    socket.SOCK_STREAM: "stream",
    socket.SOCK_DGRAM: "datagram",
    socket.SOCK_SEQPACKET: "seqpacket",
}


def socket_words(family: int, kind: int) -> str:
    """``ipv4 stream socket``, for messages."""
    return (
        f"{_FAMILY_WORDS.get(family, f'family {family}')} "
        f"{_KIND_WORDS.get(kind, f'type {kind}')} socket"
    )


@dataclass(frozen=True)
class Listening:
    """What a file descriptor passed to circusd turned out to be."""

    fd: int
    family: int
    kind: int
    listening: bool
    address: Any  # a path for unix sockets, (host, port, ...) for inet

    def describe(self) -> str:
        state = "listening" if self.listening else "not listening"
        return f"{socket_words(self.family, self.kind)} ({state})"

    def address_text(self) -> str:
        if self.family == socket.AF_UNIX:
            return str(self.address) or "(unnamed)"
        host, port = self.address[0], self.address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def inspect_fd(fd: int) -> Listening:
    """Describe the socket on ``fd`` without taking it; SocketError if the
    fd is closed or is not a socket."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise SocketError(f"fd {fd} is not open: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise SocketError(f"fd {fd} is not a socket but a {_file_kind(mode)}")
    sock = socket.socket(fileno=fd)
    try:
        return Listening(
            fd=fd,
            family=sock.family,
            kind=sock.type,
            listening=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
            address=sock.getsockname(),
        )
    finally:
        sock.detach()


def _file_kind(mode: int) -> str:
    for test, word in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return word
    return "file of another kind"


def inet_address_matches(bound: Any, host: str, port: int) -> bool:
    """Whether an inet socket bound to ``bound`` is on ``host:port``; port 0
    means any port, and a wildcard host matches only a wildcard."""
    bound_host, bound_port = bound[0], bound[1]
    if port and port != bound_port:
        return False
    wildcards = ("", "*", "0.0.0.0", "::")
    if host in wildcards or bound_host in wildcards:
        return host in wildcards and bound_host in wildcards
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None)}
    except OSError:
        return False
    return bound_host in wanted


class PassedSockets:
    """Listening sockets that systemd passed for ``[socket:NAME]`` sections.

    One per daemon (the arbiter makes ``CircusSocket`` from config alone);
    the daemon fills it at start, before anything is bound.
    """

    def __init__(self) -> None:
        self._fds: dict[str, list[int]] = {}

    def offer(self, fds: Mapping[str, Sequence[int]]) -> None:
        self._fds = {name: list(numbers) for name, numbers in fds.items()}

    def get(self, name: str) -> list[int]:
        return list(self._fds.get(name, ()))

    def names(self) -> set[str]:
        return set(self._fds)


passed_sockets = PassedSockets()


class CircusSocket:
    """One ``[socket:NAME]``: bound and listening as long as circusd runs it."""

    def __init__(self, config: SocketConfig) -> None:
        self.config = config
        self.name = config.name
        self.sock: socket.socket | None = None
        self.adopted = False  # passed by systemd: not ours to unlink

    @property
    def fileno(self) -> int:
        assert self.sock is not None, f"socket {self.name} is not bound"
        return self.sock.fileno()

    @property
    def family(self) -> int:
        if self.config.path:
            return socket.AF_UNIX
        return _constant(self.config.family, "family")

    def bind(self) -> None:
        passed = passed_sockets.get(self.name)
        if passed:
            self.sock = self._adopt(passed)
            self.adopted = True
            log.info(
                "adopted socket=%s address=%s fd=%d from systemd",
                self.name,
                self.address,
                self.sock.fileno(),
            )
            return
        self.sock = self.make_bound(reuseport=self.config.so_reuseport)
        log.info(
            "bound socket=%s address=%s fd=%d",
            self.name,
            self.address,
            self.sock.fileno(),
        )

    def make_bound(self, *, reuseport: bool = False) -> socket.socket:
        """A new socket bound and listening on this address (not inheritable)."""
        config = self.config
        kind = _constant(config.type, "type")
        proto = socket.getprotobyname(config.proto) if config.proto else 0
        sock = socket.socket(self.family, kind, proto)
        try:
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if config.interface:
                sock.setsockopt(
                    socket.SOL_SOCKET,
                    socket.SO_BINDTODEVICE,
                    config.interface.encode() + b"\0",
                )
            if self.family == socket.AF_UNIX:
                self._bind_unix(sock)
            else:
                sock.bind(self._inet_address())
            if kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
                sock.listen(config.backlog)
            sock.setblocking(config.blocking)
        except OSError as exc:
            sock.close()
            raise SocketError(
                f"cannot bind socket {self.name} on {self.address}: {exc.strerror}"
            ) from None
        return sock

    def _adopt(self, fds: list[int]) -> socket.socket:
        """Our own copy of the socket systemd passed, once it is checked to be
        the one this section describes."""
        if len(fds) > 1:
            raise SocketError(
                f"systemd passed {len(fds)} sockets named {self.name}; "
                f"[socket:{self.name}] takes exactly one"
            )
        where = f"systemd socket {self.name} (fd {fds[0]})"
        try:
            info = inspect_fd(fds[0])
        except SocketError as exc:
            raise SocketError(f"{where}: {exc}") from None
        kind = _constant(self.config.type, "type")
        if (info.family, info.kind) != (self.family, kind):
            raise SocketError(
                f"{where} is a {info.describe()}, but [socket:{self.name}] "
                f"describes a {socket_words(self.family, kind)}"
            )
        if kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET) and not info.listening:
            raise SocketError(f"{where} is not listening")
        if not self._is_bound_here(info):
            raise SocketError(
                f"{where} is bound to {info.address_text()}, but "
                f"[socket:{self.name}] says {self.address}"
            )
        sock = socket.socket(fileno=os.dup(fds[0]))
        sock.setblocking(self.config.blocking)
        return sock

    def _is_bound_here(self, info: Listening) -> bool:
        if self.family == socket.AF_UNIX:
            path = self.config.path or ""
            return os.path.abspath(path) == os.path.abspath(str(info.address))
        return inet_address_matches(
            info.address, self.config.host or "", int(self.config.port or 0)
        )

    def _inet_address(self) -> Any:
        infos = socket.getaddrinfo(
            self.config.host, self.config.port, self.family, socket.SOCK_STREAM
        )
        return infos[0][4]

    def _bind_unix(self, sock: socket.socket) -> None:
        path = self.config.path
        assert path is not None
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(path).st_mode
            if not self.config.replace:
                raise OSError(17, f"{path} exists (set replace = true)")
            if not stat.S_ISSOCK(mode):
                raise OSError(17, f"{path} exists and is not a socket")
            os.unlink(path)
        # The umask applies at bind time, so the file never has a wider mode.
        old = os.umask(self.config.umask)
        try:
            sock.bind(path)
        finally:
            os.umask(old)

    @property
    def address(self) -> str:
        if self.config.path:
            return self.config.path
        if self.sock is not None and self.family != socket.AF_UNIX:
            host, port = self.sock.getsockname()[:2]
            return f"{host}:{port}"
        return f"{self.config.host}:{self.config.port}"

    def describe(self) -> dict[str, Any]:
        """The ``listsockets`` entry."""
        info: dict[str, Any] = {
            "fd": self.fileno,
            "name": self.name,
            "backlog": self.config.backlog,
        }
        if self.family == socket.AF_UNIX:
            info["path"] = self.config.path
        else:
            host, port = self.sock.getsockname()[:2] if self.sock else ("", 0)
            info["host"], info["port"] = host, port
        return info

    def close(self) -> None:
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        if self.config.path and not self.adopted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.path)
        log.info("closed socket=%s", self.name)
