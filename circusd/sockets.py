"""Listening sockets that circusd binds once and hands to its children."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
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


class CircusSocket:
    """One ``[socket:NAME]``: bound and listening as long as circusd runs it."""

    def __init__(self, config: SocketConfig) -> None:
        self.config = config
        self.name = config.name
        self.sock: socket.socket | None = None

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
        if self.config.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.path)
        log.info("closed socket=%s", self.name)
