"""The ``$(circus.X)`` variables of config values, at load and at spawn time.

Two syntaxes mean the same, case-insensitively: ``$(circus.X)`` and
``((circus.X))``. At load time only ``$(circus.env.NAME)`` is expanded; the
others (``wid``, ``sockets.NAME``, a watcher option) stay in ``cmd``, ``args``
and ``shell_args`` until a process is spawned, and are refused anywhere else.

Values of ``[env]`` sections also understand Circus's ``$NAME`` (an upper-case
name, looked up in circusd's own environment) and ``$$`` for a literal ``$``.

Every expansion is a single pass: text that a variable expands to is never
scanned again. A variable that is not defined is an error, never an empty
string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from circusd.config.model import WatcherConfig
from circusd.errors import ValueProblem

_CIRCUS_REF = r"\$\(circus\.(?P<a>[\w.-]+)\)|\(\(circus\.(?P<b>[\w.-]+)\)\)"
CIRCUS_VAR = re.compile(_CIRCUS_REF, re.IGNORECASE)
_ENV_VALUE = re.compile(
    r"(?P<dollar>\$\$)|"
    + _CIRCUS_REF
    + r"|\$(?P<name>[A-Z][A-Z0-9_]*)(?![A-Za-z0-9_])",
    re.IGNORECASE,
)
_SPAWN = re.compile(
    _CIRCUS_REF + r"|(?P<wid>(?-i:\$WID))(?![A-Za-z0-9_])", re.IGNORECASE
)

Scope = Sequence[Mapping[str, str]]


def lookup(scope: Scope, name: str) -> str | None:
    """The value of ``name`` in the first layer that has it.

    Each layer is searched for the exact name first, then regardless of
    case (Circus matches these names case-insensitively).
    """
    folded = name.casefold()
    for layer in scope:
        if name in layer:
            return layer[name]
        for key, value in layer.items():
            if key.casefold() == folded:
                return value
    return None


def _reference(match: re.Match[str]) -> str:
    return match.group("a") or match.group("b")


def _undefined(name: str, written: str) -> ValueProblem:
    return ValueProblem(
        f"undefined variable {name} in {written}; define it in [env] or in "
        "circusd's environment"
    )


def expand_config(
    text: str,
    scope: Scope,
    deferred: Callable[[str], None] | None = None,
) -> str:
    """Expand ``$(circus.env.NAME)`` in one config value.

    Any other ``$(circus.X)`` is passed to ``deferred``, which raises
    ValueProblem if X is not allowed and otherwise leaves the reference for
    spawn time. Without ``deferred`` such a reference is an error.
    """

    def replace(match: re.Match[str]) -> str:
        reference = _reference(match)
        head, _, rest = reference.partition(".")
        if head.lower() == "env" and rest:
            value = lookup(scope, rest)
            if value is None:
                raise _undefined(rest, match.group(0))
            return value
        if deferred is None:
            raise ValueProblem(
                f"{match.group(0)} cannot be used here: only $(circus.env.NAME) "
                "is expanded in this option ($(circus.wid), "
                "$(circus.sockets.NAME) and options only in cmd, args and "
                "shell_args)"
            )
        deferred(reference)
        return match.group(0)

    return CIRCUS_VAR.sub(replace, text)


def expand_env_value(text: str, scope: Scope, environ: Mapping[str, str]) -> str:
    """Expand one value written in an ``[env]`` or ``[env:...]`` section.

    ``$$`` is a literal ``$``; ``$NAME`` (upper case) comes from ``environ``
    (circusd's real environment, as in Circus); ``$(circus.env.NAME)`` comes
    from ``scope``. A ``$`` before anything else is kept as written.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("name")
        if name is not None:
            if not name.isupper():
                return match.group(0)  # $Mixed or $lower: not a variable
            value = environ.get(name)
            if value is None:
                raise ValueProblem(
                    f"undefined variable {name} in ${name}; define it in "
                    "circusd's environment, or write $$ for a literal $"
                )
            return value
        reference = _reference(match)
        head, _, rest = reference.partition(".")
        if head.lower() != "env" or not rest:
            raise ValueProblem(
                f"{match.group(0)} cannot be used in an environment value: "
                "only $(circus.env.NAME) is expanded here"
            )
        value = lookup(scope, rest)
        if value is None:
            raise _undefined(rest, match.group(0))
        return value

    return _ENV_VALUE.sub(replace, text)


def spawn_text(
    template: str,
    *,
    wid: int,
    sockets: Mapping[str, int],
    env: Mapping[str, str],
    options: Mapping[str, Any],
) -> str:
    """Expand the spawn-time variables of ``cmd``, ``args`` or ``shell_args``.

    ``$(circus.wid)`` and the deprecated ``$WID`` give the worker id,
    ``$(circus.sockets.NAME)`` the socket's file descriptor,
    ``$(circus.env.NAME)`` a variable of the process environment, and
    ``$(circus.OPTION)`` a watcher option. Raises ValueProblem naming a
    variable that is not defined.
    """
    socket_fds = {name.lower(): fd for name, fd in sockets.items()}
    option_values = {name.lower(): value for name, value in options.items()}

    def replace(match: re.Match[str]) -> str:
        if match.group("wid"):
            return str(wid)
        reference = _reference(match)
        lowered = reference.lower()
        head, _, rest = reference.partition(".")
        if lowered == "wid":
            return str(wid)
        if head.lower() == "sockets" and rest:
            fd = socket_fds.get(rest.lower())
            if fd is None:
                raise ValueProblem(f"unknown socket {rest} in {match.group(0)}")
            return str(fd)
        if head.lower() == "env" and rest:
            value = lookup([env], rest)
            if value is None:
                raise _undefined(rest, match.group(0))
            return value
        if lowered in option_values:
            return _option_text(option_values[lowered])
        raise ValueProblem(f"unknown variable {match.group(0)}")

    return _SPAWN.sub(replace, template)


def _option_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


def socket_names(text: str) -> set[str]:
    """Names of the sockets that ``$(circus.sockets.NAME)`` refers to."""
    names = set()
    for match in CIRCUS_VAR.finditer(text):
        head, _, rest = _reference(match).partition(".")
        if head.lower() == "sockets" and rest:
            names.add(rest.lower())
    return names


def spawn_templates(watcher: WatcherConfig) -> Iterable[str]:
    """The values that are expanded at spawn time: cmd, args and shell_args."""
    yield watcher.cmd
    if isinstance(watcher.args, str):
        yield watcher.args
    else:
        yield from watcher.args
    if watcher.shell_args:
        yield watcher.shell_args


def referenced_sockets(watcher: WatcherConfig) -> set[str]:
    """Sockets a watcher uses: named in cmd/args/shell_args, or stdin_socket."""
    names: set[str] = set()
    for text in spawn_templates(watcher):
        names |= socket_names(text)
    if watcher.stdin_socket:
        names.add(watcher.stdin_socket.lower())
    return names
