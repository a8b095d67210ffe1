"""Hands an SSH channel to ZeroMQ, in this process, without a TCP listener.

ZeroMQ cannot adopt a connected file descriptor, so it connects to a unix
socket in Linux's abstract namespace: no file is created, so nothing is left
behind even after a kill -9. The listener lives only until its first
connection from this very process (SO_PEERCRED pid) is accepted; a connection
from any other process is closed unread and logged. Two daemon threads then
copy bytes between the accepted socket and the channel with full writes
(sendall), and pass end-of-file on in each direction.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import struct
import threading
import time
from typing import Any

import paramiko
import zmq

from circusd.client.endpoints import new_socket
from circusd.client.ssh.errors import SSHError

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_COPY_ERRORS = (OSError, EOFError, paramiko.SSHException)


class Pump:
    """Copies bytes both ways between ``channel`` and ``local`` until both end."""

    def __init__(self, channel: paramiko.Channel, local: socket.socket, label: str):
        self.channel = channel
        self.local = local
        self.label = label
        self.error: str | None = None
        self._open_directions = 2
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._upstream, name=f"ssh-up {label}", daemon=True
            ),
            threading.Thread(
                target=self._downstream, name=f"ssh-down {label}", daemon=True
            ),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _upstream(self) -> None:
        try:
            while data := self.local.recv(CHUNK):
                self.channel.sendall(data)
            self.channel.shutdown_write()
        except _COPY_ERRORS as exc:
            self._failed("to the server", exc)
        finally:
            self._direction_done()

    def _downstream(self) -> None:
        try:
            while data := self.channel.recv(CHUNK):
                self.local.sendall(data)
            self.local.shutdown(socket.SHUT_WR)
        except _COPY_ERRORS as exc:
            self._failed("from the server", exc)
        finally:
            self._direction_done()

    def _failed(self, direction: str, exc: BaseException) -> None:
        if self.error is None and not self.channel.closed:
            self.error = f"copying {direction} failed: {exc or type(exc).__name__}"
            logger.warning("tunnel broke endpoint=%s error=%s", self.label, self.error)
        self._shut()

    def _direction_done(self) -> None:
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            self.channel.close()
            self.local.close()

    def _shut(self) -> None:
        # Wakes both copying threads: recv on either side then returns b"".
        self.channel.close()
        try:
            self.local.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, timeout: float = 2.0) -> None:
        """Stop copying and wait for both threads."""
        self._shut()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0))
        self.local.close()


def bridge(
    context: zmq.Context[Any],
    kind: int,
    channel: paramiko.Channel,
    label: str,
    timeout: float,
) -> tuple[zmq.Socket[Any], Pump]:
    """A ZeroMQ socket of ``kind`` whose only connection is ``channel``."""
    name = f"circusctl-{os.getpid()}-{secrets.token_hex(16)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock: zmq.Socket[Any] | None = None
    try:
        listener.bind("\0" + name)
        listener.listen(1)
        sock = new_socket(context, kind)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)  # the listener is gone by then
        sock.connect(f"ipc://@{name}")
        local = _accept_own(listener, time.monotonic() + timeout, label)
    except BaseException:
        if sock is not None:
            sock.close(linger=0)
        raise
    finally:
        listener.close()
    pump = Pump(channel, local, label)
    pump.start()
    return sock, pump


def _accept_own(listener: socket.socket, deadline: float, label: str) -> socket.socket:
    """The first connection from this process; others are closed unread."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SSHError(f"bridge for {label}: ZeroMQ did not connect in time")
        listener.settimeout(remaining)
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        raw = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size
        )
        pid, uid, _gid = _CREDENTIALS.unpack(raw)
        if pid == os.getpid():
            connection.settimeout(None)
            return connection
        logger.warning(
            "refused local connection pid=%d uid=%d bridge=%s", pid, uid, label
        )
        connection.close()
