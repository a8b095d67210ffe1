"""What changed between two loaded configurations (for ``reloadconfig``).

Watchers, sockets and plugins are matched by name. Where a section sits in
its file (``source``) is not a change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from circusd.config.model import Config, WatcherConfig


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


@dataclass(frozen=True)
class Changes:
    """Names added, removed and changed, each sorted."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class ConfigDiff:
    watchers: Changes
    # Watchers whose only change is numprocesses: scale them, don't restart.
    # They are not in ``watchers.changed``.
    numprocesses: tuple[str, ...]
    sockets: Changes
    plugins: Changes
    circus_changed: bool

    @property
    def empty(self) -> bool:
        return not (
            self.watchers
            or self.numprocesses
            or self.sockets
            or self.plugins
            or self.circus_changed
        )


def diff(old: Config, new: Config) -> ConfigDiff:
    watchers = _changes(old.watchers, new.watchers)
    before = {w.name: w for w in old.watchers}
    after = {w.name: w for w in new.watchers}
    scaled = tuple(
        name
        for name in watchers.changed
        if _only_numprocesses(before[name], after[name])
    )
    watchers = dataclasses.replace(
        watchers,
        changed=tuple(name for name in watchers.changed if name not in scaled),
    )
    return ConfigDiff(
        watchers=watchers,
        numprocesses=scaled,
        sockets=_changes(old.sockets, new.sockets),
        plugins=_changes(old.plugins, new.plugins),
        circus_changed=old.circus != new.circus,
    )


def _changes(old: Iterable[N], new: Iterable[N]) -> Changes:
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    return Changes(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(
            sorted(
                name
                for name in before.keys() & after.keys()
                if _comparable(before[name]) != _comparable(after[name])
            )
        ),
    )


def _comparable(item: Any) -> dict[str, Any]:
    fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    fields.pop("source", None)
    return fields


def _only_numprocesses(old: WatcherConfig, new: WatcherConfig) -> bool:
    return old.numprocesses != new.numprocesses and _comparable(
        old.replace(numprocesses=new.numprocesses)
    ) == _comparable(new)
