"""Talking to systemd: sd_notify messages to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

_notify_socket = os.environ.pop("NOTIFY_SOCKET", None)


def notify(message: str) -> None:
    """Send one sd_notify datagram; does nothing when not run by systemd."""
    if not _notify_socket:
        return
    address = _notify_socket
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
        ) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning(
            "cannot notify systemd socket=%s error=%s", _notify_socket, exc.strerror
        )
