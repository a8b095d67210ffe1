"""Turning a Circus INI file into a checked, frozen ``Config``.

Every key goes through the option tables of ``circusd.config.options``; an
unknown key, a value of the wrong type, an undefined variable or a reference
to something that does not exist is a ConfigError that names the file, line,
section and key. Callers turn a ConfigError into exit code 78.

The watcher sections are built in ``circusd.config.watchers``, the plugin
sections in ``circusd.config.plugins``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from circusd.config import checks
from circusd.config.httpd import with_console
from circusd.config.interpolate import Scope
from circusd.config.located import at, error, expand_entry, unknown_key
from circusd.config.model import CircusConfig, Config, SocketConfig
from circusd.config.options import CIRCUS_OPTIONS, SOCKET_OPTIONS, closest
from circusd.config.parser import INCLUDE_KEYS, IniDocument, Section, read
from circusd.config.plugins import plugin
from circusd.config.watchers import Context, check_env_patterns, global_env, watcher
from circusd.errors import ValueProblem

SECTION_KINDS = (
    "circus",
    "env",
    "env:PATTERN",
    "watcher:NAME",
    "socket:NAME",
    "plugin:NAME",
)
_WATCHER_NAME = re.compile(r"[^\s.]+")
_SOCKET_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*")
_FAMILIES = ("AF_INET", "AF_INET6", "AF_UNIX")
_TYPES = ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET", "SOCK_RAW", "SOCK_RDM")
_ENDPOINTS = ("endpoint", "pubsub_endpoint", "stats_endpoint")
DEFAULT_STATS_ENDPOINT = "tcp://127.0.0.1:5557"  # Circus's


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and return the configuration in ``path``.

    ``environ`` is circusd's environment (default ``os.environ``): it feeds
    ``$NAME`` and ``$(circus.env.NAME)`` and is what ``copy_env`` copies.
    Raises ConfigError.
    """
    environ = dict(os.environ if environ is None else environ)
    path = os.path.abspath(path)
    document = read(path, lambda entry: expand_entry(entry, "circus", [environ]))
    layout = _Layout.of(document)
    base = os.path.dirname(path)
    env = global_env(layout.env, environ)
    scope = [env, environ]
    sockets = [_socket(name, s, scope, base) for name, s in layout.sockets]
    context = Context(
        base=base,
        environ=environ,
        global_env=env,
        env_patterns=layout.env_patterns,
        sockets=frozenset(socket.name for socket in sockets),
    )
    check_env_patterns(context, [name for name, _ in layout.watchers])
    watchers = [watcher(name, s, context) for name, s in layout.watchers]
    plugins = [plugin(name, s, scope) for name, s in layout.plugins]
    config = Config(
        circus=_circus(layout.circus, scope, base),
        watchers=tuple(sorted(watchers, key=lambda w: w.name)),
        sockets=tuple(sorted(sockets, key=lambda s: s.name)),
        plugins=tuple(sorted(plugins, key=lambda p: p.name)),
        path=path,
        environ=env,
    )
    return with_console(config, environ)


# -- sections -----------------------------------------------------------------


@dataclass
class _Layout:
    """The sections of a document, sorted by kind, with their names checked."""

    circus: Section | None = None
    env: Section | None = None
    env_patterns: list[tuple[list[str], Section]] = field(default_factory=list)
    watchers: list[tuple[str, Section]] = field(default_factory=list)
    sockets: list[tuple[str, Section]] = field(default_factory=list)
    plugins: list[tuple[str, Section]] = field(default_factory=list)

    @classmethod
    def of(cls, document: IniDocument) -> _Layout:
        layout = cls()
        for section in document.sections.values():
            layout._add(section)
        _unique(layout.watchers, "watcher")
        _unique(layout.sockets, "socket")
        _unique(layout.plugins, "plugin")
        return layout

    def _add(self, section: Section) -> None:
        kind, colon, name = section.name.partition(":")
        if section.name == "circus":
            self.circus = section
        elif section.name == "env":
            self.env = section
        elif colon and kind == "env":
            patterns = [p.strip() for p in name.split(",") if p.strip()]
            if not patterns:
                raise error("expected [env:PATTERN,...] with a pattern", section)
            self.env_patterns.append((patterns, section))
        elif colon and kind in ("watcher", "plugin"):
            named = (_checked_name(name, section, _WATCHER_NAME), section)
            if kind == "watcher" and name.lower().startswith("plugin:"):
                raise error(
                    f"invalid watcher name {name!r}: names starting with "
                    "'plugin:' belong to the [plugin:NAME] sections",
                    section,
                )
            (self.watchers if kind == "watcher" else self.plugins).append(named)
        elif colon and kind == "socket":
            name = _checked_name(name, section, _SOCKET_NAME)
            self.sockets.append((name.lower(), section))
        else:
            raise error(_unknown_section(section.name), section)


def _unknown_section(name: str) -> str:
    kind, colon, rest = name.partition(":")
    known = [k.partition(":")[0] for k in SECTION_KINDS]
    if kind.lower() in known and kind.lower() != kind:
        lowered = f"{kind.lower()}{colon}{rest}"
        hint = f" (section kinds are lower-case: did you mean [{lowered}]?)"
    else:
        hint = closest(kind, known)
    return f"unknown section; expected one of {', '.join(SECTION_KINDS)}{hint}"


def _checked_name(name: str, section: Section, pattern: re.Pattern[str]) -> str:
    kind = section.name.partition(":")[0]
    if pattern.fullmatch(name):
        return name
    if not name:
        raise error(f"empty {kind} name", section)
    if kind == "socket":
        allowed = "letters, digits, '_', '-' and inner dots"
    else:
        allowed = "no whitespace and no dots (names become event topics)"
    raise error(f"invalid {kind} name {name!r}: expected {allowed}", section)


def _unique(named: list[tuple[str, Section]], kind: str) -> None:
    seen: dict[str, Section] = {}
    for name, section in named:
        first = seen.setdefault(name.lower(), section)
        if first is not section:
            raise error(
                f"duplicate {kind} name {name!r}: [{first.name}] at "
                f"{first.path}:{first.line} has the same name (names are "
                "compared case-insensitively)",
                section,
            )


# -- [circus] -----------------------------------------------------------------


def _circus(section: Section | None, scope: Scope, base: str) -> CircusConfig:
    if section is None:
        return CircusConfig()
    found: dict[str, Any] = {}
    for key, entry in section.entries.items():
        if key in INCLUDE_KEYS:
            continue
        option = CIRCUS_OPTIONS.get(key)
        if option is None:
            raise unknown_key(section, entry, [*CIRCUS_OPTIONS, *INCLUDE_KEYS])
        text = expand_entry(entry, section.name, scope)
        with at(section, entry):
            found[key] = _circus_value(key, option.convert(text), base)
    if "stats_endpoint" in found and "statsd" not in found:
        found["statsd"] = found["stats_endpoint"] is not None  # as Circus does
    if found.get("statsd") and found.get("stats_endpoint") is None:
        found["stats_endpoint"] = DEFAULT_STATS_ENDPOINT
    config = CircusConfig(**found)
    _check_prometheus(config, section)
    seen: dict[str, str] = {}
    for key in _ENDPOINTS:
        endpoint = getattr(config, key)
        if endpoint in seen:
            raise error(
                f"{endpoint} is also the {seen[endpoint]}; each endpoint needs "
                "its own address",
                section,
                section.entries.get(key),
            )
        if endpoint is not None:
            seen[endpoint] = key
    return config


def _check_prometheus(config: CircusConfig, section: Section) -> None:
    """The metrics page cannot tell who reads it: loopback only, unless
    the config accepts, with insecure_tcp, that anyone who reaches it may."""
    endpoint = config.prometheus_endpoint
    if endpoint is None or config.insecure_tcp:
        return
    if not checks.is_loopback(endpoint.rpartition(":")[0]):
        raise error(
            f"{endpoint} is not a loopback address, so any host that reaches "
            "it could read the metrics; use 127.0.0.1 or [::1], or set "
            "insecure_tcp = true",
            section,
            section.entries.get("prometheus_endpoint"),
        )


def _circus_value(key: str, value: Any, base: str) -> Any:
    if value is None:
        return None
    if key in _ENDPOINTS:
        return checks.zmq_endpoint(value, base)
    if key == "prometheus_endpoint":
        return checks.host_port(value)
    if key == "multicast_endpoint":
        return checks.udp_endpoint(value)
    if key == "pidfile":
        return checks.absolute(base, value)
    if key == "logoutput":
        return checks.log_output(value, base)
    if key == "loglevel":
        return checks.log_level(value)
    if key == "endpoint_owner":
        checks.user(value)
    if key in ("httpd_users", "httpd_certfile", "httpd_keyfile"):
        return checks.absolute(base, value)
    if key == "httpd_user":
        checks.user(value)
    if key == "httpd_trusted_proxies":
        checks.networks(value)
    if key == "loggerconfig":
        raise ValueProblem(
            "not supported: circusd sets up its own logging; use loglevel and "
            "logoutput instead"
        )
    return value


# -- [socket:NAME] --------------------------------------------------------------


def _socket(name: str, section: Section, scope: Scope, base: str) -> SocketConfig:
    found: dict[str, Any] = {}
    for key, entry in section.entries.items():
        option = SOCKET_OPTIONS.get(key)
        if option is None:
            raise unknown_key(section, entry, list(SOCKET_OPTIONS))
        text = expand_entry(entry, section.name, scope)
        with at(section, entry):
            found[key] = option.convert(text)
    entries = section.entries
    with at(section, entries.get("family")):
        if "family" in found:
            found["family"] = checks.socket_constant(found["family"], "AF_", _FAMILIES)
    with at(section, entries.get("type")):
        if "type" in found:
            found["type"] = checks.socket_constant(found["type"], "SOCK_", _TYPES)
    with at(section, entries.get("proto")):
        if found.get("proto") is not None:
            found["proto"] = checks.protocol(found["proto"])
    if found.get("path") is not None:
        family = found.get("family", "AF_UNIX")
        if family != "AF_UNIX":
            raise error(
                f"path is set, so the socket is AF_UNIX, but family is {family}",
                section,
                entries["family"],
            )
        found["family"] = "AF_UNIX"
        with at(section, entries["path"]):
            found["path"] = checks.unix_path(checks.absolute(base, found["path"]))
    elif found.get("family") == "AF_UNIX":
        raise error("family AF_UNIX needs a path", section, entries["family"])
    return SocketConfig(name=name, source=f"{section.path}:{section.line}", **found)
