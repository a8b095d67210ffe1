"""Who may subscribe to the stats stream: those circusd lets read.

libzmq keeps every subscription of every connection, about 44 bytes per
byte of a distinct topic and 70 per connection holding a topic, with no
limit of its own, and takes them in ahead of the application: a local user
who could connect to a loopback tcp stream made circusd-stats, a root
process, grow by 280 MB with 6 MB of subscriptions. So every connection
goes through a ZAP handler here, before its first subscription is read,
and only a caller who may read circusd's state (root, circusd's user,
``endpoint_owner``, ``readonly_group``, or a peer on another host of an
``insecure_tcp`` endpoint, as for the control endpoint) is let in. The
caller is identified as the control endpoint identifies it
(``circusd.control.auth``): SO_PEERCRED over ipc, the kernel's socket table
over loopback tcp. A connection that cannot be identified at once is
refused; its ZeroMQ client connects again by itself.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Any

import zmq
import zmq.asyncio

from circusd.control.auth import ZAP_ENDPOINT, Caller, TcpPeers, ipc_peer, serve_zap
from circusd.control.policy import Policy

log = logging.getLogger(__name__)

_DOMAINS = {b"circusd-stats-ipc": "ipc", b"circusd-stats-tcp": "tcp"}


class StreamGate:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        owner_uid: int | None,
        readonly_gid: int | None,
        insecure_tcp: bool = False,
    ) -> None:
        self.policy = Policy(os.geteuid(), owner_uid, readonly_gid)
        self.insecure_tcp = insecure_tcp
        self.tcp_peers = TcpPeers()
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
        if family in (socket.AF_INET, socket.AF_INET6):
            host = ipaddress.ip_address(address[0]).packed
            self.tcp_peers.listen(host, int(address[1]))
            sock.zap_domain = b"circusd-stats-tcp"
        else:
            sock.zap_domain = b"circusd-stats-ipc"

    async def serve(self) -> None:
        """Answer libzmq's ZAP requests until the socket is closed."""
        await serve_zap(self._zap, self.answer, (b"400", b"not identified", b""))

    def answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != b"1.0":
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _, mechanism = request[:6]
        caller = self.caller(_DOMAINS.get(domain), address.decode("ascii", "replace"))
        if mechanism == b"NULL" and caller is not None:
            if self.policy.may_read(caller):
                return [version, request_id, b"200", b"OK", b"", b""]
            log.info("stats subscriber refused %s reason=%r", caller.describe(),
                     caller.detail or "may not read circusd's state")  # fmt: skip
        return [version, request_id, b"400", b"may not read", b"", b""]

    def caller(self, transport: str | None, address: str) -> Caller | None:
        if transport == "ipc":
            return ipc_peer(address)
        if transport == "tcp":
            return self.tcp_peers.identify(address, self.insecure_tcp)
        return None

    def close(self) -> None:
        self._zap.close()
