"""Converters from config text (or JSON values) to typed option values.

Each converter takes either the raw INI string or a JSON value sent by a
client, and returns the typed value or raises ValueProblem with a message
that says what was expected. Nothing here knows where the value came from;
callers add the file, line, section and key.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable
from typing import Any

from circusd.errors import ValueProblem

Converter = Callable[[Any], Any]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueProblem(f"expected a boolean (true/false), got {value!r}")


def integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        digits = stripped.removeprefix("-")
        if digits.isascii() and digits.isdecimal() and len(digits) <= 20:
            return int(stripped)
    raise ValueProblem(f"expected an integer, got {value!r}")


def bounded(low: int | None, high: int | None) -> Converter:
    def convert(value: Any) -> int:
        number = integer(value)
        if low is not None and number < low:
            raise ValueProblem(f"expected an integer >= {low}, got {number}")
        if high is not None and number > high:
            raise ValueProblem(f"expected an integer <= {high}, got {number}")
        return number

    return convert


def number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueProblem(f"expected a number, got {value!r}") from None
    else:
        raise ValueProblem(f"expected a number, got {value!r}")
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueProblem(f"expected a finite number, got {value!r}")
    if result < 0:
        raise ValueProblem(f"expected a number >= 0, got {value!r}")
    if result > 10**7:
        raise ValueProblem(f"expected a number <= 10000000, got {value!r}")
    return result


def text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueProblem(f"expected a string, got {value!r}")


def optional_text(value: Any) -> str | None:
    if value is None:
        return None
    result = text(value)
    return result or None


def octal(value: Any) -> int:
    """A file mode or umask. Text is always read as octal ("022", "0o22")."""
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str):
        digits = value.strip().lower().removeprefix("0o")
        try:
            result = int(digits, 8)
        except ValueError:
            raise ValueProblem(
                f"expected an octal mode such as 022, got {value!r}"
            ) from None
    else:
        raise ValueProblem(f"expected an octal mode such as 022, got {value!r}")
    if not 0 <= result <= 0o7777:
        raise ValueProblem(f"expected an octal mode between 0 and 7777, got {value!r}")
    return result


def signum(value: Any) -> int:
    """A signal: a number, or a name with or without SIG, any case, RTMIN+n."""
    if isinstance(value, int) and not isinstance(value, bool):
        number_ = value
    elif isinstance(value, str) and value.strip():
        name = value.strip().upper()
        if name.isascii() and name.isdecimal():
            number_ = int(name)
        else:
            name = name if name.startswith("SIG") else "SIG" + name
            number_ = _signal_by_name(name)
    else:
        raise ValueProblem(f"expected a signal name or number, got {value!r}")
    if not 1 <= number_ <= signal.SIGRTMAX:
        raise ValueProblem(
            f"expected a signal number 1..{signal.SIGRTMAX}, got {value!r}"
        )
    return number_


def _signal_by_name(name: str) -> int:
    for base in ("SIGRTMIN", "SIGRTMAX"):
        if name.startswith(base) and name != base:
            offset = name[len(base) :]
            if offset[:1] in "+-" and offset[1:].isdigit():
                return int(getattr(signal, base)) + int(offset)
    member = signal.Signals.__members__.get(name)
    if member is None:
        raise ValueProblem(f"unknown signal {name!r}")
    return int(member)


def signal_name(number_: int) -> str:
    try:
        return signal.Signals(number_).name
    except ValueError:
        return str(number_)


MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel


def ident(value: Any) -> str | int | None:
    """A user or group, by name or number; resolved later against the system."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdecimal()):
            if not stripped or "\0" in stripped or len(stripped) > 256:
                raise ValueProblem(f"expected a user or group name, got {value!r}")
            return stripped
        value = int(stripped)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ID:
            raise ValueProblem(f"expected an id between 0 and {MAX_ID}, got {value}")
        return value
    raise ValueProblem(f"expected a user or group name or number, got {value!r}")


def arguments(value: Any) -> str | tuple[str, ...]:
    """``args``: a string (split like a shell would) or a list of strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueProblem(f"expected a string or a list of strings, got {value!r}")


def shell_words(value: str, what: str = "value") -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ValueProblem(f"cannot split {what} {value!r}: {exc}") from None


def environment(value: Any) -> dict[str, str]:
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        for key in value:
            if not key or "=" in key or "\0" in key:
                raise ValueProblem(f"invalid environment variable name {key!r}")
        return dict(value)
    if isinstance(value, str):
        # circusctl's "set w env A=1,B=2" form
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if all(len(pair) == 2 for pair in pairs):
            return {k.strip(): v for k, v in pairs}
    raise ValueProblem(f"expected an object of string values, got {value!r}")


_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(value: Any) -> int:
    """A byte count, optionally with a K, M or G suffix."""
    if isinstance(value, str) and value.strip()[-1:].lower() in _SIZE_SUFFIXES:
        stripped = value.strip()
        result = integer(stripped[:-1]) * _SIZE_SUFFIXES[stripped[-1].lower()]
    else:
        result = integer(value)
    if result < 0:
        raise ValueProblem(f"expected a size >= 0, got {value!r}")
    return result


MAX_RLIMIT = 2**64 - 1  # rlim_t; the kernel reads 2**64 - 1 as unlimited


def rlimit(value: Any) -> tuple[int, int]:
    """``soft[:hard]``; empty, "unlimited" or null mean no limit (infinity)."""
    import resource

    def one(part: Any) -> int:
        if part is None or (
            isinstance(part, str)
            and part.strip().lower() in ("", "unlimited", "infinity", "-1")
        ):
            return resource.RLIM_INFINITY
        result = integer(part)
        if not 0 <= result <= MAX_RLIMIT:
            raise ValueProblem(
                f"expected a limit between 0 and {MAX_RLIMIT} or 'unlimited', "
                f"got {part!r}"
            )
        return result

    if isinstance(value, (list, tuple)) and len(value) == 2:
        return one(value[0]), one(value[1])
    if isinstance(value, str) and ":" in value:
        soft, hard = value.split(":", 1)
        return one(soft), one(hard)
    both = one(value)
    return both, both
