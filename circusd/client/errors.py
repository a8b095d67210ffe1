"""What can go wrong when talking to the daemon, as one exception hierarchy."""

from __future__ import annotations

from typing import Any

from circusd.errors import CircusdError

_NOT_RUNNING = "the daemon is not running or not reachable"


class CallError(CircusdError):
    """A call to the daemon that did not produce a successful reply."""


class InvalidEndpoint(CallError):
    """The endpoint cannot be used at all (bad scheme, port, or path length)."""


class DaemonUnreachable(CallError):
    """Nothing answered on the endpoint: no socket, refused, or no reply in time."""

    def __init__(self, endpoint: str, detail: str, why: str = _NOT_RUNNING) -> None:
        super().__init__(f"cannot reach {endpoint}: {detail}; {why}")
        self.endpoint = endpoint
        self.detail = detail


class CallTimeout(DaemonUnreachable):
    """The request was sent but no matching reply came before the deadline."""


class ReplyError(CallError):
    """The daemon answered with ``status: error``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.reason = str(reply.get("reason") or "unspecified error")
        errno_value = reply.get("errno", 0)
        self.errno = errno_value if isinstance(errno_value, int) else 0
        super().__init__(self.reason)
