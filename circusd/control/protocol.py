"""The control protocol's messages: parsing requests, shaping replies.

Requests are one JSON object: ``{"command", "properties", "id", "msg_type"}``.
Replies carry ``status``, ``time`` and the request's ``id`` echoed verbatim;
errors add ``reason``, ``errno`` and ``tb`` (always null: circusd never sends
a traceback to a client).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from circusd.errors import CommandError, Errno

MAX_MESSAGE = 1 << 20  # bytes; larger frames are dropped by ZeroMQ itself
MAX_DEPTH = 32  # JSON nesting; real requests use 4 levels at most


@dataclass(frozen=True)
class Request:
    command: str
    properties: dict[str, Any]
    id: Any
    cast: bool


class BadRequest(Exception):
    def __init__(
        self, reason: str, errno: Errno, id: Any = None, cast: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = errno
        self.id = id
        self.cast = cast  # a cast is never answered, not even with an error


def parse(frame: bytes) -> Request:
    try:
        message = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("json invalid", Errno.INVALID_JSON) from None
    if not isinstance(message, dict):
        raise BadRequest(
            "json invalid: the message must be a JSON object", Errno.INVALID_JSON
        )
    request_id = message.get("id")
    cast = message.get("msg_type") == "cast"
    if _deeper_than(message, MAX_DEPTH):
        # Checked here once, so no command (and no reply echoing the id) can
        # hit Python's recursion limit on a value a client nested on purpose.
        if _deeper_than(request_id, MAX_DEPTH - 1):
            request_id = None
        raise BadRequest(
            f"message invalid: nested deeper than {MAX_DEPTH} levels",
            Errno.MESSAGE_ERROR,
            request_id,
            cast,
        )
    command = message.get("command")
    if command is None:
        raise BadRequest(
            "message invalid 'command' is missing",
            Errno.MESSAGE_ERROR,
            request_id,
            cast,
        )
    if not isinstance(command, str):
        raise BadRequest(
            "message invalid 'command' must be a string",
            Errno.MESSAGE_ERROR,
            request_id,
            cast,
        )
    properties = message.get("properties", {})
    if properties is None or properties == []:
        properties = {}
    if not isinstance(properties, dict):
        raise BadRequest(
            "message invalid 'properties' must be an object",
            Errno.MESSAGE_ERROR,
            request_id,
            cast,
        )
    return Request(command.lower(), properties, request_id, cast)


def _deeper_than(value: Any, limit: int) -> bool:
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, (dict, list))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


def ok(request_id: Any, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "ok", "time": time.time()}
    if fields:
        reply.update(fields)
    reply["id"] = request_id
    return reply


def error(request_id: Any, reason: str, errno: Errno) -> dict[str, Any]:
    return {
        "status": "error",
        "reason": _one_line(reason),
        "tb": None,
        "time": time.time(),
        "errno": int(errno),
        "id": request_id,
    }


def _one_line(reason: str) -> str:
    """Escape what a client sent that could break a reason into lines (a name
    with a newline) or hide part of it (NUL, bidi overrides) on a terminal."""
    if reason.isprintable():
        return reason
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)


def encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode()


class Properties:
    """Typed access to a request's properties; every problem is errno 3."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def _get(
        self, key: str, kinds: tuple[type, ...], what: str, default: Any, required: bool
    ) -> Any:
        if key not in self.values or self.values[key] is None:
            if required:
                raise CommandError(f"message invalid {key!r} is missing")
            return default
        value = self.values[key]
        if not isinstance(value, kinds) or (
            isinstance(value, bool) and bool not in kinds
        ):
            raise CommandError(f"message invalid {key!r} must be {what}")
        return value

    def text(self, key: str, default: str | None = None, required: bool = False) -> Any:
        value = self._get(key, (str,), "a string", default, required)
        if required and value == "":
            raise CommandError(f"message invalid {key!r} must not be empty")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # lenient: some clients send strings
        if value is None:
            return default
        if not isinstance(value, bool):
            raise CommandError(f"message invalid {key!r} must be a boolean")
        return value

    def integer(
        self,
        key: str,
        default: int | None = None,
        required: bool = False,
        low: int | None = None,
        high: int | None = None,
    ) -> Any:
        value = self.values.get(key)
        if isinstance(value, str):
            try:  # int() refuses "--5", "²" and 5000-digit strings
                value = int(value.strip())
            except ValueError:
                raise CommandError(
                    f"message invalid {key!r} must be an integer"
                ) from None
        if value is None:
            if required:
                raise CommandError(f"message invalid {key!r} is missing")
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommandError(f"message invalid {key!r} must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise CommandError(f"message invalid {key!r} must be {bounds}")
        return value

    def number(self, key: str, default: float | None = None) -> Any:
        value = self.values.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandError(f"message invalid {key!r} must be a number")
        if not 0 <= value <= 10**7:
            raise CommandError(f"message invalid {key!r} must be between 0 and 1e7")
        return float(value)

    def mapping(self, key: str, required: bool = False) -> dict[str, Any]:
        value = self._get(key, (dict,), "an object", {}, required)
        return dict(value)

    def strings(self, key: str, required: bool = False) -> list[str]:
        value = self._get(key, (list, str), "a list of strings", [], required)
        if isinstance(value, str):
            return [value]
        if not all(isinstance(item, str) for item in value):
            raise CommandError(f"message invalid {key!r} must be a list of strings")
        return list(value)

    @property
    def waiting(self) -> bool:
        return self.flag("waiting")
