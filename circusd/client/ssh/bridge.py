"""Hands an SSH channel to ZeroMQ, in this process, without a TCP listener.

ZeroMQ cannot adopt a connected file descriptor, so it connects to a unix
socket in Linux's abstract namespace: no file is created, so nothing is left
behind even after a kill -9. The listener lives only until its first
connection from this very process (SO_PEERCRED pid) is accepted; a connection
from any other process is closed unread and logged. Bytes are then copied
between the accepted socket and the channel (see Pump), and end-of-file is
passed on in each direction.

The local half (listener, ZeroMQ socket, copying threads) is made while the
channel is being opened, so that its cost overlaps the channel's round trip.
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
from circusd.client.ssh.transport import TunnelTransport, credit, hold

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_COPY_ERRORS = (OSError, EOFError, paramiko.SSHException)


class Pump:
    """Copies bytes both ways between a channel and a local socket.

    To the server, a thread reads the local socket and sends on the channel.
    From the server, paramiko's own thread gives every message to
    ``receive``, which writes it to the local socket at once if that does
    not block and nothing is queued before it; the rest is queued in the
    channel, and a second thread writes it out, in order, with a full write.

    The threads start at once and wait for ``connect``; ``close`` (or
    ``connect`` never coming) ends them.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.error: str | None = None
        self.ended_by_server = False  # the server sent end-of-file
        self.done = False  # both directions have ended
        self._channel: paramiko.Channel | None = None
        self._local: socket.socket | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._open_directions = 2
        # Guards the local socket's writes from paramiko's thread: _queued is
        # True while data waits in the channel for the downstream thread.
        self._order = threading.Lock()
        self._queued = True
        self._direct = True
        self._threads = [
            threading.Thread(
                target=self._upstream, name=f"ssh-up {label}", daemon=True
            ),
            threading.Thread(
                target=self._downstream, name=f"ssh-down {label}", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def connect(
        self,
        channel: paramiko.Channel,
        local: socket.socket,
        transport: TunnelTransport,
    ) -> None:
        self._channel, self._local = channel, local
        with self._order:
            transport.deliver_to(channel, self.receive)
            # Exact: what came before deliver_to is in the channel by now,
            # and what comes after waits for _order in receive.
            self._queued = channel.recv_ready()
        self._ready.set()

    def receive(self, data: bytes, may_send: bool) -> None:
        """In paramiko's thread: ``data`` from the server, for ZeroMQ."""
        assert self._channel is not None and self._local is not None
        with self._order:
            taken = 0
            if may_send and self._direct and not self._queued:
                try:
                    taken = self._local.send(data, socket.MSG_DONTWAIT)
                except OSError:  # full, or broken: the thread will tell
                    taken = 0
            if taken:
                credit(self._channel, taken)
            if taken < len(data):
                self._queued = True
                hold(self._channel, data[taken:])

    def _upstream(self) -> None:
        self._ready.wait()
        channel, local = self._channel, self._local
        if channel is None or local is None:
            return
        try:
            while data := _read_local(local):
                channel.sendall(data)
            channel.shutdown_write()
        except _COPY_ERRORS as exc:
            self._failed("to the server", exc)
        finally:
            self._direction_done()

    def _downstream(self) -> None:
        self._ready.wait()
        channel, local = self._channel, self._local
        if channel is None or local is None:
            return
        try:
            while data := channel.recv(CHUNK):
                if not _write_local(local, data):
                    break  # ZeroMQ closed its socket: nobody wants the rest
                with self._order:
                    self._queued = channel.recv_ready()
            else:
                self.ended_by_server = True
                _shut_local(local, socket.SHUT_WR)
        except _COPY_ERRORS as exc:
            self._failed("from the server", exc)
        finally:
            self._direction_done()

    def _failed(self, direction: str, exc: BaseException) -> None:
        if self.error is None and self._channel and not self._channel.closed:
            self.error = f"copying {direction} failed: {exc or type(exc).__name__}"
            logger.warning("tunnel broke endpoint=%s error=%s", self.label, self.error)
        self._shut()

    def _direction_done(self) -> None:
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
            self.done = last
        if last and self._channel is not None and self._local is not None:
            self._stop_direct()
            self._channel.close()
            self._local.close()

    def _stop_direct(self) -> None:
        """No more writes from paramiko's thread (before the socket closes)."""
        with self._order:
            self._direct = False
        channel = self._channel
        if channel is not None:
            transport = channel.get_transport()
            if isinstance(transport, TunnelTransport):
                transport.deliver_to(channel, None)

    def _shut(self) -> None:
        # Wakes both copying threads: recv on either side then returns b"".
        if self._channel is not None:
            self._channel.close()
        if self._local is not None:
            _shut_local(self._local, socket.SHUT_RDWR)

    def close(self, timeout: float = 2.0) -> None:
        """Stop copying and wait for both threads."""
        self._ready.set()  # threads still waiting for connect() end now
        self._shut()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0))
        if self._local is not None:
            self._stop_direct()
            self._local.close()


# The local socket's peer is always this process's own ZeroMQ socket (see
# _accept_own): an error on it means ZeroMQ closed its end, as it does when
# circusctl closes a socket while data still arrives (at exit, say). That
# ends the copying quietly; only a failure on the SSH side is a broken tunnel.


def _read_local(local: socket.socket) -> bytes:
    """The next bytes from ZeroMQ; b"" once it has closed its end."""
    try:
        return local.recv(CHUNK)
    except OSError as exc:
        logger.debug("local end closed error=%s", exc)
        return b""


def _write_local(local: socket.socket, data: bytes) -> bool:
    """Give ``data`` to ZeroMQ; False if it has closed its end."""
    try:
        local.sendall(data)
    except OSError as exc:
        logger.debug("local end closed error=%s", exc)
        return False
    return True


def _shut_local(local: socket.socket, how: int) -> None:
    try:
        local.shutdown(how)
    except OSError:
        pass  # already closed by ZeroMQ


class PendingBridge:
    """The local half of a bridge, made while the SSH channel is being opened.

    ``prepare`` (run between sending the channel-open request and its answer)
    makes the listener and the ZeroMQ socket, which starts connecting and
    queues its greeting, and starts the copying threads.
    """

    def __init__(self, context: zmq.Context[Any], kind: int, label: str) -> None:
        self.label = label
        self._context = context
        self._kind = kind
        self._listener = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC
        )
        self.socket: zmq.Socket[Any] | None = None
        self.pump: Pump | None = None

    def prepare(self) -> None:
        name = f"circusctl-{os.getpid()}-{secrets.token_hex(16)}"
        try:
            self._listener.bind("\0" + name)
            self._listener.listen(1)
            self.socket = new_socket(self._context, self._kind)
            self.socket.setsockopt(zmq.RECONNECT_IVL, -1)  # the listener goes
            self.socket.connect(f"ipc://@{name}")
            self.pump = Pump(self.label)
        except BaseException:
            self.abort()
            raise

    def attach(
        self, channel: paramiko.Channel, transport: TunnelTransport, timeout: float
    ) -> tuple[zmq.Socket[Any], Pump]:
        """Join ZeroMQ's connection to ``channel``; the listener is closed."""
        assert self.socket is not None and self.pump is not None
        try:
            local = _accept_own(self._listener, time.monotonic() + timeout, self.label)
        except BaseException:
            self.abort()
            raise
        self._listener.close()
        self.pump.connect(channel, local, transport)
        return self.socket, self.pump

    def abort(self) -> None:
        self._listener.close()
        if self.pump is not None:
            self.pump.close()
        if self.socket is not None:
            self.socket.close(linger=0)


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
