"""Who may subscribe to a stream circusd publishes: those it lets read.

libzmq keeps every subscription of every connection to a PUB or XPUB
socket, about 44 bytes per byte of a distinct topic, with no limit of its
own, and takes them in ahead of the application. So every connection to
the event stream (``pubsub_endpoint``, served by circusd) and to the stats
stream (served by circusd-stats) goes through a ZAP handler before libzmq
reads its first subscription, and only a caller who may read circusd's
state is let in: root, circusd's user, ``endpoint_owner``, members of
``readonly_group``, or a peer on another host of an ``insecure_tcp``
endpoint (as for the control endpoint). The caller is identified as the
control endpoint identifies it (``circusd.control.auth``): SO_PEERCRED over
ipc, the kernel's socket table over loopback tcp. A connection that cannot
be identified at once is refused too. A ZeroMQ client refused during the
handshake does not connect again, but a hand-written one may, as often as
it likes: refusals are written to the audit log once per user and minute,
with the count of those left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from circusd.control.auth import Caller, TcpPeers, ipc_peer
from circusd.control.policy import Policy

log = logging.getLogger(__name__)
audit = logging.getLogger("circusd.audit")

# Bytes in one subscription; a longer one drops its connection (libzmq's
# ZMQ_MAXMSGSIZE counts the topic and its (un)subscribe byte).
MAX_TOPIC = 4096
# A connection that has not finished its ZMTP handshake by then is closed
# (libzmq's default is 30 s): a client that connects and says nothing holds
# one of circusd's open files that long at most.
HANDSHAKE_SECONDS = 5.0
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two audit lines about one user


class SubscriberGate:
    """The ZAP answers for one stream (``events``, ``stats``)."""

    def __init__(self, stream: str, policy: Policy, insecure_tcp: bool) -> None:
        self.stream = stream
        self.policy = policy
        self.insecure_tcp = insecure_tcp
        self.tcp_peers = TcpPeers()
        self._domains = {
            f"circusd-{stream}-ipc".encode(): "ipc",
            f"circusd-{stream}-tcp".encode(): "tcp",
        }
        self.refusals = RefusalLog(stream)

    def guard(self, sock: zmq.Socket[Any], tcp: bool) -> None:
        """Send every connection to ``sock`` through this gate and limit what
        one may send; call before binding (then ``listening`` for tcp)."""
        sock.zap_domain = f"circusd-{self.stream}-{'tcp' if tcp else 'ipc'}".encode()
        sock.maxmsgsize = MAX_TOPIC + 1
        sock.handshake_ivl = int(HANDSHAKE_SECONDS * 1000)
        if tcp:
            self.tcp_peers.watch(sock)

    def listening(self, host: bytes, port: int) -> None:
        """The tcp address (packed host: zeros for any) the stream is bound to."""
        self.tcp_peers.listen(host, port)

    def answers(self, domain: bytes) -> bool:
        return domain in self._domains

    def answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != b"1.0":
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _, mechanism = request[:6]
        try:
            caller = self.caller(self._domains.get(domain), address.decode("ascii"))
        except Exception:  # refused, never let in by a failure (of the table)
            log.exception("identifying a subscriber failed stream=%s", self.stream)
            caller = None
        if mechanism == b"NULL" and caller is not None:
            if self.policy.may_read(caller):
                return [version, request_id, b"200", b"OK", b"", b""]
            self.refusals.refused(caller)
        return [version, request_id, b"400", b"may not read", b"", b""]

    def caller(self, transport: str | None, address: str) -> Caller | None:
        if transport == "ipc":
            return ipc_peer(address)
        if transport == "tcp":
            return self.tcp_peers.identify(
                address, self.insecure_tcp, self.policy.may_read
            )
        return None


class RefusalLog:
    """``refused subscriber`` audit lines, at most one per user and interval."""

    def __init__(
        self,
        stream: str,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interval = interval
        self._clock = clock
        self._last: dict[int | None, tuple[float, int]] = {}  # uid: (logged, left out)

    def refused(self, caller: Caller) -> None:
        now = self._clock()
        logged, left_out = self._last.get(caller.uid, (None, 0))
        if logged is not None and now - logged < self.interval:
            self._last[caller.uid] = (logged, left_out + 1)
            return
        if len(self._last) >= 1024:
            self._last = {
                uid: entry
                for uid, entry in self._last.items()
                if now - entry[0] < self.interval
            }
        self._last[caller.uid] = (now, 0)
        fields = [f"stream={self.stream}", caller.describe()]
        if caller.uid is None:
            fields.append(f"reason={caller.detail or 'not identified'!r}")
        else:
            if caller.detail:
                fields.append(f"peer={caller.detail!r}")
            fields.append("reason='may not read the state of circusd'")
        if left_out:
            fields.append(f"refusals_not_logged={left_out}")
        audit.warning("refused subscriber %s", " ".join(fields))
