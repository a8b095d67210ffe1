"""A paramiko Transport that can also open channels to remote unix sockets.

OpenSSH forwards to a unix socket with the ``direct-streamlocal@openssh.com``
channel, whose open message carries the socket path. paramiko can open a
channel of that type but writes no path into the message, and sshd then drops
the whole connection. ``TunnelTransport.open_unix_channel`` adds the path as
the message is sent, by overriding ``Transport._send_user_message``, which is
not public API: the range of paramiko versions this was tested on is pinned
in PARAMIKO_TESTED, and tests/ssh checks it against a real sshd.

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
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

STREAMLOCAL = "direct-streamlocal@openssh.com"
# [lowest, first untested) versions of paramiko with the same open_channel.
PARAMIKO_TESTED = ((2, 12), (6, 0))


def paramiko_version() -> tuple[int, ...]:
    numbers = re.findall(r"\d+", paramiko.__version__)[:3]
    return tuple(int(number) for number in numbers)


def streamlocal_supported() -> bool:
    low, high = PARAMIKO_TESTED
    return low <= paramiko_version()[:2] < high


class TunnelTransport(paramiko.Transport):
    """A client Transport with ``open_unix_channel``."""

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._streamlocal = threading.local()

    def open_unix_channel(self, path: str, timeout: float) -> paramiko.Channel:
        """A channel to the unix socket ``path`` on the server.

        Raises paramiko.ChannelException when the server refuses it.
        """
        self._streamlocal.path = path
        try:
            return self.open_channel(STREAMLOCAL, timeout=timeout)
        finally:
            self._streamlocal.path = None

    def _send_user_message(self, data: Any) -> None:
        path = getattr(self._streamlocal, "path", None)
        if path is not None and _is_streamlocal_open(data):
            self._streamlocal.path = None
            # socket path, then the reserved string and uint32 (both unused)
            data.add_string(path)
            data.add_string("")
            data.add_int(0)
        super()._send_user_message(data)


def _is_streamlocal_open(data: Any) -> bool:
    if not isinstance(data, Message):
        return False
    copy = Message(data.asbytes())
    return copy.get_byte() == cMSG_CHANNEL_OPEN and copy.get_text() == STREAMLOCAL


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
