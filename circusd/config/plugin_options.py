"""The plugins circusd ships, and the keys of a ``[plugin:NAME]`` section.

Pure data, like ``circusd.config.options``: the loader checks a section
against it, docs/configuration.md and docs/plugins.md are written from it,
and each plugin reads its own options through the same table. Nothing here
imports plugin code.

A section has two kinds of keys. ``PROCESS_OPTIONS`` shape the plugin's
process (its start order, its user, its restart budget); every other key is
an option of the plugin. Circus's names (``circus.plugins.statsd.
StatsdEmitter``) and circusd's own (``circusd.plugins.statsd.StatsdEmitter``)
name the same shipped plugin.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from circusd.config import values as v
from circusd.config.options import Option, optional_signum
from circusd.errors import ValueProblem

CIRCUS_PACKAGE = "circus.plugins."
OUR_PACKAGE = "circusd.plugins."
FLAPPING = "circus.plugins.flapping.Flapping"
FLAPPING_OPTIONS = ("attempts", "window", "retry_in", "max_retry", "active")


def _table(*options: Option) -> Mapping[str, Option]:
    return {option.name: option for option in options}


# -- converters -------------------------------------------------------------------


def positive(value: Any) -> float:
    """A number of seconds (or a rate) above zero."""
    result = v.number(value)
    if result <= 0:
        raise ValueProblem(f"expected a number > 0, got {value!r}")
    return result


def sample_rate(value: Any) -> float:
    result = v.number(value)
    if not 0 < result <= 1:
        raise ValueProblem(f"expected a number above 0 and at most 1, got {value!r}")
    return result


def regex(value: Any) -> str:
    """A Python regular expression, checked here and compiled by the plugin."""
    text = v.text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueProblem(f"invalid regular expression {text!r}: {exc}") from None
    return text


def heartbeat_regex(value: Any) -> str:
    text = regex(value)
    if "pid" not in re.compile(text).groupindex:
        raise ValueProblem(f"the regular expression {text!r} has no (?P<pid>...) group")
    return text


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(value: Any) -> int:
    """``250M``, ``1.5G``, ``512K``, ``4096`` (powers of 1024; a B is optional)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(v.text(value).strip())
    if match is None:
        raise ValueProblem(f"expected a size such as 250M or 1.5G, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class MemoryLimit:
    """``max_mem``/``min_mem``: a percentage of the host's memory, or bytes."""

    value: float
    percent: bool

    def describe(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)} bytes"


def memory_limit(value: Any) -> MemoryLimit | None:
    """A plain number is a percentage (as in Circus); with a unit, a size."""
    if value is None:
        return None
    try:
        return MemoryLimit(v.number(value), percent=True)
    except ValueProblem:
        pass
    try:
        return MemoryLimit(byte_size(value), percent=False)
    except ValueProblem:
        raise ValueProblem(
            f"expected a percentage such as 90 or a size such as 250M, got {value!r}"
        ) from None


def optional_number(value: Any) -> float | None:
    return None if value is None else v.number(value)


def optional_positive(value: Any) -> float | None:
    return None if value is None else positive(value)


# -- the keys of the plugin's process ------------------------------------------------

USE = Option(
    "use",
    v.text,
    None,
    "The plugin's class as a dotted path (required): a shipped plugin's "
    "Circus name, or your own class.",
)

PROCESS_OPTIONS = _table(
    Option(
        "active",
        v.boolean,
        True,
        "Start the plugin with circusd; `false` leaves it stopped until "
        "`circusctl start plugin:NAME`.",
    ),
    Option(
        "priority",
        v.integer,
        1,
        "Start order among the watchers, highest first (watchers default to 0, "
        "so plugins start first).",
    ),
    Option(
        "uid",
        v.ident,
        None,
        "Run the plugin as this user instead of circusd's own; its requests "
        "are then judged like any other caller's.",
    ),
    Option("gid", v.ident, None, "Group of the plugin's process."),
    Option(
        "max_retry",
        v.bounded(-1, None),
        5,
        "How many times in a row the plugin may die young before it is "
        "marked failed; -1 retries forever (with backoff).",
    ),
)


# -- the shipped plugins -----------------------------------------------------------


@dataclass(frozen=True)
class Builtin:
    """A plugin circusd ships."""

    name: str  # the module and class under circus.plugins. / circusd.plugins.
    options: Mapping[str, Option]
    needs: str  # "read" or "operate": the rights its requests need
    doc: str
    required: tuple[str, ...] = ()  # at least one of these keys must be set

    @property
    def target(self) -> str:
        return OUR_PACKAGE + self.name

    @property
    def circus_name(self) -> str:
        return CIRCUS_PACKAGE + self.name


STATSD_OPTIONS = _table(
    Option("host", v.text, "localhost", "The statsd server's host name or address."),
    Option("port", v.bounded(1, 65535), 8125, "The statsd server's UDP port."),
    Option(
        "sample_rate",
        sample_rate,
        1.0,
        "Send this fraction of the counts, marked `|@RATE` so that statsd "
        "scales them back up.",
    ),
    Option(
        "application_name",
        v.text,
        "app",
        "The second part of every metric name: `circus.NAME.watcher...`.",
    ),
)

LOOP_RATE = Option("loop_rate", positive, 60.0, "Seconds between two checks.")

WATCHDOG_OPTIONS = _table(
    LOOP_RATE,
    Option(
        "max_count",
        v.bounded(1, None),
        3,
        "A process silent for longer than `loop_rate` × `max_count` seconds is killed.",
    ),
    Option(
        "watchers_regex",
        regex,
        ".*",
        "Watch the watchers whose name matches (from its start, Python syntax).",
    ),
    Option(
        "msg_regex",
        heartbeat_regex,
        "^(?P<pid>.*);(?P<timestamp>.*)$",
        "How to read a heartbeat; it must have a `pid` group.",
    ),
    Option("ip", v.text, "127.0.0.1", "The address to receive heartbeats on."),
    Option("port", v.bounded(1, 65535), 1664, "The UDP port to receive heartbeats on."),
    Option(
        "watchers_stop_signal",
        optional_signum,
        None,
        "The signal for a silent process; default: its watcher's `stop_signal`.",
    ),
    Option(
        "watchers_graceful_timeout",
        optional_number,
        None,
        "Seconds between that signal and SIGKILL; default: the watcher's "
        "`graceful_timeout`.",
    ),
)

RESOURCE_OPTIONS = _table(
    Option("watcher", v.optional_text, None, "The watcher to look after (required)."),
    Option("service", v.optional_text, None, "Old name of `watcher`."),
    LOOP_RATE,
    Option(
        "max_cpu",
        optional_number,
        90.0,
        "CPU % (of one core) above which a process is over its limit.",
    ),
    Option("min_cpu", optional_number, None, "CPU % at or below which it is under."),
    Option(
        "max_mem",
        memory_limit,
        MemoryLimit(90.0, percent=True),
        "Memory above which a process is over its limit: a percentage of the "
        "host's memory (`90`) or a size (`250M`, `1.5G`).",
    ),
    Option(
        "min_mem", memory_limit, None, "Memory below which it is under, as `max_mem`."
    ),
    Option(
        "health_threshold",
        optional_number,
        75.0,
        "Over when the mean of its CPU % and memory % is above this.",
    ),
    Option(
        "max_count",
        v.bounded(0, None),
        3,
        "Act when a limit is broken more than this many checks in a row.",
    ),
    Option(
        "process_children",
        v.boolean,
        False,
        "Also check each child of the watcher's processes on its own, and "
        "send `child_signal` to a child that breaks a limit.",
    ),
    Option("child_signal", v.signum, signal.SIGTERM, "The signal for such a child."),
    *STATSD_OPTIONS.values(),
)

RELOADER_OPTIONS = _table(
    Option("loop_rate", positive, 1.0, "Seconds between two looks at the executables."),
)

BUILTINS: Mapping[str, Builtin] = {
    builtin.name: builtin
    for builtin in (
        Builtin(
            "statsd.StatsdEmitter",
            STATSD_OPTIONS,
            "read",
            "Counts every event in statsd: `circus.APPLICATION.watcher.WATCHER.EVENT`.",
        ),
        Builtin(
            "statsd.FullStats",
            _table(*STATSD_OPTIONS.values(), LOOP_RATE),
            "read",
            "Every `loop_rate`, sends statsd gauges of each watcher's CPU, "
            "memory and process count.",
        ),
        Builtin(
            "watchdog.WatchDog",
            WATCHDOG_OPTIONS,
            "operate",
            "Kills processes that stop sending UDP heartbeats; their watcher "
            "starts new ones.",
        ),
        Builtin(
            "resource_watcher.ResourceWatcher",
            RESOURCE_OPTIONS,
            "operate",
            "Restarts a watcher whose processes use too much (or too little) "
            "CPU or memory, or signals an offending child.",
            required=("watcher", "service"),
        ),
        Builtin(
            "command_reloader.CommandReloader",
            RELOADER_OPTIONS,
            "operate",
            "Restarts a watcher when its executable is replaced or modified.",
        ),
    )
}


def builtin(use: str) -> Builtin | None:
    """The shipped plugin ``use`` names, under Circus's package or ours."""
    for package in (CIRCUS_PACKAGE, OUR_PACKAGE):
        if use.startswith(package):
            return BUILTINS.get(use[len(package) :])
    return None


def is_flapping(use: str) -> bool:
    return use in (FLAPPING, OUR_PACKAGE + "flapping.Flapping")


def section_keys() -> list[str]:
    return [USE.name, *PROCESS_OPTIONS]


def not_shipped(use: str) -> str | None:
    """Why a ``circus.plugins.`` name that circusd does not ship cannot run."""
    if not use.startswith(CIRCUS_PACKAGE) or builtin(use) or is_flapping(use):
        return None
    shipped = ", ".join(sorted(BUILTINS))
    return (
        f"{use} is not one of the plugins circusd ships ({shipped}; "
        "flapping.Flapping is the built-in restart policy)"
    )
