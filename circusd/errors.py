"""The one exception hierarchy of circusd, and the control protocol's errnos."""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """Error numbers of the control protocol (the same table as Circus)."""

    NOT_SPECIFIED = 0
    INVALID_JSON = 1
    UNKNOWN_COMMAND = 2
    MESSAGE_ERROR = 3
    OS_ERROR = 4
    COMMAND_ERROR = 5
    BAD_MSG_DATA_ERROR = 6


class CircusdError(Exception):
    """Base of every error circusd raises on purpose."""


class ConfigError(CircusdError):
    """A configuration problem, with where it was found.

    ``str()`` gives one line: ``FILE:LINE: [SECTION] KEY: MESSAGE``, leaving
    out the parts that are unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.section = section
        self.key = key

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(f"{self.path}:{self.line}" if self.line else self.path)
        if self.section:
            where.append(f"[{self.section}]")
        if self.key:
            where.append(self.key)
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ValueProblem(CircusdError):
    """A value that does not fit its option; the caller adds where it was
    (``key``, when known, is the option: ``KEY: MESSAGE``)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.message = message
        self.key = key


class CommandError(CircusdError):
    """A control command that cannot be carried out; becomes an error reply."""

    def __init__(self, reason: str, errno: Errno = Errno.MESSAGE_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = errno


class NotFound(CommandError):
    def __init__(self, name: str) -> None:
        super().__init__(f"program {name} not found", Errno.MESSAGE_ERROR)


class SpawnError(CircusdError):
    """A child could not be started; ``reason`` is what the operator sees."""

    def __init__(self, reason: str, errno: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = errno
