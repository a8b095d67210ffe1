"""Building ``[watcher:NAME]`` sections and their environments.

``WatcherConfig.env`` holds what the config file gives a watcher, from
bottom to top: ``[env]``, each ``[env:PATTERN]`` section whose patterns match
the watcher's name (in the order they were read), and the watcher's own
``env`` key. Values written in the config may use ``$NAME``,
``$(circus.env.NAME)`` and ``$$``.

circusd's own environment is not copied here even with ``copy_env``: the
spawner puts it under the target user's HOME/USER/LOGNAME and under these
values when a process starts, byte for byte and never expanded. So ``get``
and ``options`` show only what the config says, and a changed daemon
environment is not a config change.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from circusd.config import checks, values
from circusd.config.interpolate import expand_config, expand_env_value
from circusd.config.located import at, case_hint, error
from circusd.config.model import WatcherConfig
from circusd.config.options import (
    WATCHER_OPTIONS,
    apply_watcher_option,
    check_stream,
    closest,
    watcher_keys,
)
from circusd.config.parser import Entry, Section
from circusd.errors import ValueProblem

log = logging.getLogger(__name__)

SPAWN_KEYS = ("cmd", "args", "shell_args")
_DOTTED_PREFIXES = ("stdout_stream", "stderr_stream", "hooks")
_DEPRECATED_WID = re.compile(r"\$WID(?![A-Za-z0-9_])")


@dataclass(frozen=True)
class Context:
    """What every watcher section is built against."""

    base: str  # the main config file's directory
    environ: Mapping[str, str]  # circusd's own environment
    global_env: Mapping[str, str]  # [env], expanded
    env_patterns: list[tuple[list[str], Section]]
    sockets: frozenset[str]  # names of the [socket:NAME] sections


# -- environments ---------------------------------------------------------------


def global_env(section: Section | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``[env]`` section, expanded against circusd's environment."""
    if section is None:
        return {}
    return _env_layer(section, section.entries, {}, environ)


def _env_layer(
    section: Section,
    written: Mapping[str, Entry],
    below: Mapping[str, str],
    environ: Mapping[str, str],
) -> dict[str, str]:
    """Values written in one env section, each expanded against ``below``."""
    layer = {}
    for key, entry in written.items():
        with at(section, entry):
            _env_name(key)
            layer[key] = expand_env_value(entry.value, [below, environ], environ)
    return layer


def _env_name(name: str) -> None:
    if not name or "=" in name or "\0" in name or any(c.isspace() for c in name):
        raise ValueProblem(f"invalid environment variable name {name!r}")


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def check_env_patterns(context: Context, names: list[str]) -> None:
    """Check the values of ``[env:...]`` sections that match no watcher."""
    for patterns, section in context.env_patterns:
        if any(_matches(name, patterns) for name in names):
            continue
        log.warning(
            "env section matches no watcher file=%s line=%d section=%s",
            section.path, section.line, section.name,
        )  # fmt: skip
        _env_layer(section, section.entries, context.global_env, context.environ)


def _config_env(name: str, section: Section, context: Context) -> dict[str, str]:
    """Everything the config file gives the watcher's environment."""
    env = dict(context.global_env)
    for patterns, env_section in context.env_patterns:
        if _matches(name, patterns):
            layer = _env_layer(env_section, env_section.entries, env, context.environ)
            env.update(layer)
    entry = section.entries.get("env")
    if entry is not None:
        with at(section, entry):
            pairs = values.environment(entry.value)
        written = {key: Entry(entry.key, value, entry.path, entry.line)
                   for key, value in pairs.items()}  # fmt: skip
        env.update(_env_layer(section, written, env, context.environ))
    return env


# -- [watcher:NAME] -------------------------------------------------------------


def watcher(name: str, section: Section, context: Context) -> WatcherConfig:
    config_env = _config_env(name, section, context)
    scope = [config_env, context.environ]
    base = WatcherConfig(name=name, cmd="", source=f"{section.path}:{section.line}")
    changes: dict[str, Any] = {}
    free = _custom_streams(section)
    for key, entry in section.entries.items():
        if key == "env":
            continue
        _check_key(section, entry)
        deferred = _spawn_reference(context.sockets) if key in SPAWN_KEYS else None
        with at(section, entry):
            text = expand_config(entry.value, scope, deferred)
            apply_watcher_option(changes, base, key, text, free)
    if "cmd" not in section.entries:
        raise error("missing required option cmd (the command to run)", section)
    changes["env"] = config_env
    result = _resolve_paths(base.replace(**changes), context.base)
    _check(result, section, context)
    return result


def _custom_streams(section: Section) -> frozenset[str]:
    """The streams whose class is the config file's own (a dotted path that
    is not one of Circus's): they take any key, given to the class."""
    found = set()
    for stream in ("stdout_stream", "stderr_stream"):
        entry = section.entries.get(f"{stream}.class")
        if entry is not None and "." in entry.value:
            if not entry.value.startswith("circus.stream."):
                found.add(stream)
    return frozenset(found)


def _check_key(section: Section, entry: Entry) -> None:
    hint = _unknown_key_hint(entry.key)
    if hint is not None:
        raise error(f"unknown option for a [watcher] section{hint}", section, entry)


def _unknown_key_hint(key: str) -> str | None:
    """A did-you-mean (maybe empty) for an unknown key, None for others.

    None leaves the key to apply_watcher_option, which checks the parts
    after a prefix and keeps free-form dotted keys for plugins.
    """
    if key in WATCHER_OPTIONS:
        return None
    hint = case_hint(key, watcher_keys())
    if hint:
        return hint
    prefix, dot, _ = key.partition(".")
    if dot:
        if prefix in _DOTTED_PREFIXES:
            return None
        # A free-form setting such as flapping.max_retry, unless it looks
        # like a misspelt stdout_stream., stderr_stream. or hooks. prefix.
        return closest(prefix, _DOTTED_PREFIXES) or None
    if key.startswith("rlimit_") or key in ("stdout_stream", "stderr_stream"):
        return None
    return closest(key, watcher_keys())


def _spawn_reference(sockets: frozenset[str]) -> Callable[[str], None]:
    """A check for the ``$(circus.X)`` that cmd/args keep for spawn time."""
    names = ["wid", "name", "sockets.NAME", "env.NAME", *WATCHER_OPTIONS]

    def check(reference: str) -> None:
        lowered = reference.lower()
        head, _, rest = lowered.partition(".")
        if head == "sockets" and rest:
            if rest not in sockets:
                raise ValueProblem(
                    f"$(circus.{reference}) names socket {rest!r}, but no "
                    f"[socket:{rest}] section defines it"
                )
        elif lowered not in ("wid", "name") and lowered not in WATCHER_OPTIONS:
            raise ValueProblem(
                f"unknown variable $(circus.{reference}); expected wid, "
                f"sockets.NAME, env.NAME or a watcher option"
                f"{closest(lowered, names)}"
            )

    return check


def _resolve_paths(watcher: WatcherConfig, base: str) -> WatcherConfig:
    changes: dict[str, Any] = {}
    if watcher.working_dir:
        changes["working_dir"] = checks.absolute(base, watcher.working_dir)
    for stream in ("stdout_stream", "stderr_stream"):
        settings = getattr(watcher, stream)
        if settings.get("filename"):
            filename = checks.absolute(base, settings["filename"])
            changes[stream] = {**settings, "filename": filename}
    return watcher.replace(**changes) if changes else watcher


def _check(watcher: WatcherConfig, section: Section, context: Context) -> None:
    """Checks across options, and against the system and the other sections."""
    entries = section.entries
    with at(section, entries.get("cmd")):
        if not values.shell_words(watcher.cmd, "cmd"):
            raise ValueProblem("cmd is empty; expected the command to run")
    with at(section, entries.get("args")):
        if isinstance(watcher.args, str):
            values.shell_words(watcher.args, "args")
    with at(section, entries.get("shell_args")):
        if watcher.shell_args:
            values.shell_words(watcher.shell_args, "shell_args")
    if watcher.singleton and watcher.numprocesses > 1:
        raise error(
            f"numprocesses = {watcher.numprocesses} contradicts singleton = true; "
            "a singleton runs at most one process",
            section,
            entries.get("numprocesses"),
        )
    with at(section, entries.get("stdin_socket")):
        _check_socket(watcher.stdin_socket, context.sockets)
    with at(section, entries.get("uid")):
        _check_uid(watcher)
    with at(section, entries.get("gid")):
        if watcher.gid is not None:
            checks.group(watcher.gid)
    for stream in ("stdout_stream", "stderr_stream"):
        conf = getattr(watcher, stream)
        if conf:
            with at(
                section,
                entries.get(f"{stream}.class") or entries.get(f"{stream}.filename"),
            ):
                check_stream(conf, custom=True)
    for hook_name, hook in watcher.hooks.items():
        with at(section, entries.get(f"hooks.{hook_name}")):
            checks.dotted_name(hook.target, "a hook")
    _warn_deprecated_wid(watcher.name, section)


def _check_socket(name: str | None, sockets: frozenset[str]) -> None:
    if name is not None and name.lower() not in sockets:
        raise ValueProblem(
            f"no [socket:{name.lower()}] section defines socket {name!r}"
        )


def _check_uid(watcher: WatcherConfig) -> None:
    uid = watcher.uid
    if uid is None:
        return
    checks.user(uid)
    if isinstance(uid, int) and watcher.gid is None:
        if not checks.has_passwd_entry(uid):
            raise ValueProblem(
                f"uid {uid} has no passwd entry, so its primary group is "
                "unknown; set gid"
            )


def _warn_deprecated_wid(name: str, section: Section) -> None:
    for key in SPAWN_KEYS:
        entry = section.entries.get(key)
        if entry is not None and _DEPRECATED_WID.search(entry.value):
            log.warning(
                "deprecated $WID, use $(circus.wid) file=%s line=%d watcher=%s "
                "key=%s",
                entry.path, entry.line, name, key,
            )  # fmt: skip
