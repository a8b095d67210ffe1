"""A paramiko Transport that can also open channels to remote unix sockets.

OpenSSH forwards to a unix socket with the ``direct-streamlocal@openssh.com``
channel, whose open message carries the socket path. paramiko can open a
channel of that type but writes no path into the message, and sshd then drops
the whole connection. ``TunnelTransport.open_unix_channel`` adds the path as
the message is sent, by overriding ``Transport._send_user_message``, which is
not public API: the range of paramiko versions this was tested on is pinned
in PARAMIKO_TESTED, and tests/ssh checks it against a real sshd.

The same override runs the caller's ``meanwhile`` right after the open
request has left and before paramiko waits for the answer: the first channel
of a connection waits about 1.2 ms more than later ones while sshd finishes
setting up the session after authentication, and the client's own set-up of
the tunnel (bridge, ZeroMQ socket) fits in that wait instead of adding to it.

Data from the server can also be handed over in paramiko's own thread, as it
is decrypted (``deliver_to``), instead of being buffered in the channel for
another thread to read: one thread hand-off less per message. That touches
paramiko internals too (its table of channel message handlers, the channel's
buffer and window accounting), all kept in this module.

The other way, an exec channel running a stdio bridge (socat, nc -U) on the
remote, was not chosen: it needs that tool and a login shell there, costs a
process start per connection, breaks when shell start-up files print
anything, and leaves the decision to the shell instead of to sshd's
AllowStreamLocalForwarding.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
from paramiko.common import (
    MSG_CHANNEL_DATA,
    cMSG_CHANNEL_OPEN,
    cMSG_CHANNEL_WINDOW_ADJUST,
)
from paramiko.message import Message

STREAMLOCAL = "direct-streamlocal@openssh.com"
# Authenticated encryption first: with paramiko, AES-GCM costs one call per
# packet where AES-CTR needs a separate HMAC as well (measured: about 0.05 ms
# less per request through the tunnel). The server still has its say.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# [lowest, first untested) versions of paramiko with the same open_channel,
# channel handler table, and channel buffer and window accounting.
PARAMIKO_TESTED = ((2, 12), (6, 0))


def preferred_ciphers(offered: Sequence[str]) -> list[str]:
    """``offered`` (what the transport supports) with AES-GCM first."""
    first = [name for name in AEAD_CIPHERS if name in offered]
    return first + [name for name in offered if name not in first]


def paramiko_version() -> tuple[int, ...]:
    numbers = re.findall(r"\d+", paramiko.__version__)[:3]
    return tuple(int(number) for number in numbers)


def streamlocal_supported() -> bool:
    low, high = PARAMIKO_TESTED
    return low <= paramiko_version()[:2] < high


# Takes data from the server for a channel, in paramiko's thread; the flag
# says whether it may send now (see deliver_to).
Receiver = Callable[[bytes, bool], None]


def _on_data(channel: paramiko.Channel, message: Message) -> None:
    """paramiko's handler for channel data, on a TunnelTransport."""
    transport = channel.get_transport()
    assert isinstance(transport, TunnelTransport)
    with transport._receivers_lock:
        receiver = transport._receivers.get(channel.get_id())
        if receiver is None:
            hold(channel, message.get_binary())
            return
    receiver(message.get_binary(), transport.clear_to_send.is_set())


class TunnelTransport(paramiko.Transport):
    """A client Transport with ``open_unix_channel``, channel opens that run
    local work while the server answers, and data handed over as it comes."""

    if streamlocal_supported():  # the internals below are those tested
        _channel_handler_table = {
            **paramiko.Transport._channel_handler_table,
            MSG_CHANNEL_DATA: _on_data,
        }

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._opening = threading.local()  # .path, .meanwhile of this thread
        self._receivers: dict[int, Receiver] = {}
        self._receivers_lock = threading.Lock()

    def deliver_to(self, channel: paramiko.Channel, receiver: Receiver | None) -> None:
        """From now on give the data that arrives for ``channel`` to
        ``receiver`` (None: keep it for ``channel.recv`` again).

        The receiver runs in paramiko's thread, must not block, and gets a
        flag that says whether it may send on this transport (``credit``):
        not while keys are being exchanged. Data that came before this call
        is waiting in the channel, and so is all data on a paramiko outside
        PARAMIKO_TESTED, where the receiver is never called.
        """
        with self._receivers_lock:
            if receiver is None:
                self._receivers.pop(channel.get_id(), None)
            else:
                self._receivers[channel.get_id()] = receiver

    def open_tcp_channel(
        self,
        host: str,
        port: int,
        timeout: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> paramiko.Channel:
        """A ``direct-tcpip`` channel to ``host:port`` as the server resolves it.

        ``meanwhile`` runs once the open request is sent, before its answer
        comes. Raises paramiko.ChannelException when the server refuses.
        """
        return self._open(
            "direct-tcpip", (host, port), None, timeout, meanwhile or _nothing
        )

    def open_unix_channel(
        self,
        path: str,
        timeout: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> paramiko.Channel:
        """A channel to the unix socket ``path`` on the server; as above."""
        return self._open(STREAMLOCAL, None, path, timeout, meanwhile or _nothing)

    def _open(
        self,
        kind: str,
        destination: tuple[str, int] | None,
        path: str | None,
        timeout: float,
        meanwhile: Callable[[], None],
    ) -> paramiko.Channel:
        outcome: list[Exception | None] = []

        def run_meanwhile() -> None:
            try:
                meanwhile()
                outcome.append(None)
            except Exception as exc:  # raised once the channel is known
                outcome.append(exc)

        self._opening.path = path
        self._opening.meanwhile = run_meanwhile
        try:
            source = ("127.0.0.1", 0) if destination is not None else None
            channel = self.open_channel(kind, destination, source, timeout=timeout)
        finally:
            self._opening.path = self._opening.meanwhile = None
        if not outcome:  # a paramiko that sent the request some other way
            run_meanwhile()
        if outcome[0] is not None:
            channel.close()
            raise outcome[0]
        return channel

    def _send_user_message(self, data: Any) -> None:
        meanwhile = getattr(self._opening, "meanwhile", None)
        if meanwhile is None or not _is_channel_open(data):
            super()._send_user_message(data)
            return
        self._opening.meanwhile = None
        path = self._opening.path
        if path is not None:
            # socket path, then the reserved string and uint32 (both unused)
            data.add_string(path)
            data.add_string("")
            data.add_int(0)
        super()._send_user_message(data)
        meanwhile()


def _nothing() -> None:
    pass


def hold(channel: paramiko.Channel, data: bytes) -> None:
    """Keep ``data`` in the channel, for ``channel.recv``."""
    channel._feed(data)


def credit(channel: paramiko.Channel, size: int) -> None:
    """Count ``size`` bytes as consumed, as ``channel.recv`` does, and let
    the server send more when enough were. In paramiko's thread, only while
    no key exchange is under way (a Receiver's flag)."""
    grant = channel._check_add_window(size)
    if grant > 0:
        message = Message()
        message.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        message.add_int(channel.remote_chanid)
        message.add_int(grant)
        transport = channel.get_transport()
        assert transport is not None
        transport._send_user_message(message)


def _is_channel_open(data: Any) -> bool:
    return isinstance(data, Message) and data.asbytes()[:1] == cMSG_CHANNEL_OPEN


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges every segment it reads at once.

    sshd leaves Nagle's algorithm on for connections without a terminal.
    When it sends two messages in a row (its hostkeys-00 notice, then our
    channel's confirmation), the second waits for the acknowledgement of the
    first, which Linux delays by 40 ms. Asking for a quick ack before each
    read removes that wait from the first request of every command.
    """

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return super().recv(size, flags)


def quick_ack(sock: socket.socket) -> QuickAckSocket:
    """``sock`` (connected TCP) as a QuickAckSocket with TCP_NODELAY."""
    timeout = sock.gettimeout()
    quick = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    quick.settimeout(timeout)
    quick.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return quick
