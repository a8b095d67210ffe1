"""Building ``[plugin:NAME]`` sections.

Every key but ``use`` is kept as text for the plugin, which reads it again
through its own option table. The keys of the plugin's process (``active``,
``priority``, ``uid``, ``gid``, ``max_retry``) are also read here. A plugin
circusd ships is checked like any other section: an unknown option or a
value of the wrong type is a ConfigError at its line. Other plugins' options
are their own business; nothing here imports plugin code.
"""

from __future__ import annotations

from typing import Any

from circusd.config import checks
from circusd.config import plugin_options as catalog
from circusd.config.interpolate import Scope
from circusd.config.located import at, case_hint, error, expand_entry
from circusd.config.model import PluginConfig
from circusd.config.options import closest
from circusd.config.parser import Section


def plugin(name: str, section: Section, scope: Scope) -> PluginConfig:
    settings: dict[str, str] = {}
    for key, entry in section.entries.items():
        settings[key] = expand_entry(entry, section.name, scope)
    use = section.entries.get("use")
    if use is None:
        raise error(
            "missing required option use (the plugin's dotted class path)", section
        )
    with at(section, use):
        target = checks.dotted_name(settings.pop("use"), "use")
    process: dict[str, Any] = {}
    for key, option in catalog.PROCESS_OPTIONS.items():
        if key in settings:
            with at(section, section.entries[key]):
                process[key] = option.convert(settings[key])
    with at(section, section.entries.get("uid")):
        if process.get("uid") is not None:
            checks.user(process["uid"])
    with at(section, section.entries.get("gid")):
        if process.get("gid") is not None:
            checks.group(process["gid"])
    _check_shipped(target, settings, section)
    return PluginConfig(
        name=name,
        use=target,
        options=settings,
        source=f"{section.path}:{section.line}",
        **process,
    )


def _check_shipped(use: str, settings: dict[str, str], section: Section) -> None:
    found = catalog.builtin(use)
    if found is not None:
        known: list[str] = list(found.options)
        what = found.name
    elif catalog.is_flapping(use):
        known, what = list(catalog.FLAPPING_OPTIONS), "flapping.Flapping"
    else:
        return
    for key, text in settings.items():
        if key in catalog.PROCESS_OPTIONS:
            continue
        entry = section.entries[key]
        if key not in known:
            keys = [*catalog.section_keys(), *known]
            hint = case_hint(key, keys) or closest(key, keys)
            raise error(
                f"unknown option for {what}{hint}; it takes {', '.join(known)}",
                section,
                entry,
            )
        if found is not None:
            with at(section, entry):
                found.options[key].convert(text)
    if found is not None and found.required:
        if not any(key in settings for key in found.required):
            raise error(
                f"missing required option {found.required[0]} for {found.name}",
                section,
            )
