"""ConfigErrors that say where: file, line, section and key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from circusd.config.interpolate import Scope, expand_config
from circusd.config.options import closest
from circusd.config.parser import Entry, Section
from circusd.errors import ConfigError, ValueProblem


def error(message: str, section: Section, entry: Entry | None = None) -> ConfigError:
    """A ConfigError at ``entry``, or at the section header without one."""
    if entry is None:
        return ConfigError(
            message, path=section.path, line=section.line, section=section.name
        )
    return ConfigError(
        message,
        path=entry.path,
        line=entry.line,
        section=section.name,
        key=entry.key,
    )


@contextmanager
def at(section: Section, entry: Entry | None = None) -> Iterator[None]:
    """Turn a ValueProblem raised inside into a ConfigError at ``entry``."""
    try:
        yield
    except ValueProblem as exc:
        raise error(str(exc), section, entry) from None


def expand_entry(entry: Entry, section_name: str, scope: Scope) -> str:
    """``$(circus.env.NAME)`` expanded in a value where nothing else may be."""
    with at(Section(section_name, entry.path, entry.line), entry):
        return expand_config(entry.value, scope)


def unknown_key(section: Section, entry: Entry, known: list[str]) -> ConfigError:
    kind = section.name.partition(":")[0]
    hint = case_hint(entry.key, known) or closest(entry.key, known)
    return error(f"unknown option for a [{kind}] section{hint}", section, entry)


def case_hint(key: str, known: list[str]) -> str:
    """A did-you-mean for a key that differs from a known one only in case."""
    for candidate in known:
        if candidate.lower() == key.lower():
            return f" (option names are case-sensitive: did you mean {candidate!r}?)"
    return ""
