"""Who may subscribe to the stats stream: those circusd lets read
(``circusd.control.subscribers``, as for the event stream).

circusd-stats is a process of its own, with a ZeroMQ context of its own, so
it answers the ZAP requests of its stream itself, here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import zmq
import zmq.asyncio

from circusd.control.auth import ZAP_ENDPOINT, serve_zap
from circusd.control.policy import Policy
from circusd.control.subscribers import SubscriberGate


class StreamGate:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        owner_uid: int | None,
        readonly_gid: int | None,
        insecure_tcp: bool = False,
    ) -> None:
        policy = Policy(os.geteuid(), owner_uid, readonly_gid)
        self.gate = SubscriberGate("stats", policy, insecure_tcp)
        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(ZAP_ENDPOINT)

    def guard(self, sock: zmq.Socket[Any], fd: int) -> None:
        """Send every connection to ``sock`` (served on the listening socket
        ``fd``) through this gate; call before binding."""
        listening = socket.socket(fileno=fd)
        try:
            family, address = listening.family, listening.getsockname()
        finally:
            listening.detach()  # the descriptor stays open, for ZeroMQ
        tcp = family in (socket.AF_INET, socket.AF_INET6)
        self.gate.guard(sock, tcp)
        if tcp:
            self.gate.listening(ipaddress.ip_address(address[0]).packed, address[1])

    async def serve(self) -> None:
        """Answer libzmq's ZAP requests until the socket is closed."""
        await serve_zap(
            self._zap,
            self.gate.answer,
            (b"400", b"not identified", b""),
            [self.gate.tcp_peers],
        )

    def close(self) -> None:
        self.gate.tcp_peers.close()
        self._zap.close()
