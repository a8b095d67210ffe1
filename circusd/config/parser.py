"""Reading Circus INI files, remembering where every key came from.

The syntax is the one Circus reads (reference §3), written out here so that
each value keeps its file and line for error messages:

* ``[name]`` starts a section; a section seen again is extended.
* ``key = value`` or ``key: value``; the first ``=`` or ``:`` splits. Keys keep
  their case.
* A line whose first non-blank character is ``#`` or ``;`` is a comment. In a
  value, ``;`` starts a comment only after whitespace (``a;b`` stays whole).
* An indented line after a key continues its value; the parts are joined with
  a newline. A value that starts on the next line has no leading newline.
* A value of exactly ``""`` is the empty string.
* A key repeated in one file keeps its first value; an included file can add
  sections and keys but never replace a key that is already set.
* ``%`` has no meaning: nothing like ``%(name)s`` is interpolated.

Includes come from the main file's ``[circus]`` section only (they are not
recursive): ``include`` is a space-separated list of globs and ``include_dir``
a space-separated list of directories whose ``*.ini`` files are read, both
relative to the main file's directory.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from circusd.errors import ConfigError

log = logging.getLogger(__name__)

INCLUDE_KEYS = ("include", "include_dir")

_INLINE_COMMENT = re.compile(r"\s;")
_IGNORED = ("", "")
_HEADER = re.compile(r"\[(?P<name>[^\]]*)\]\s*(?:[#;].*)?$")


@dataclass(frozen=True)
class Entry:
    """One ``key = value`` line, with where it was written."""

    key: str
    value: str
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Section:
    name: str
    path: str  # where the section first appeared
    line: int
    entries: dict[str, Entry] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return entry.value if entry is not None else None


@dataclass
class IniDocument:
    """Every section of the main file and its includes, in reading order."""

    path: str
    sections: dict[str, Section] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)


def read(path: str, expand: Callable[[Entry], str] | None = None) -> IniDocument:
    """Read ``path`` and the files its ``[circus]`` section includes.

    ``expand`` turns an ``include``/``include_dir`` entry into its final text
    (the loader uses it for ``$(circus.env.X)``). Raises ConfigError.
    """
    path = os.path.abspath(path)
    document = IniDocument(path)
    parse_file(document, path)
    for include in _included_files(document, expand or (lambda entry: entry.value)):
        if include in document.files:
            continue
        parse_file(document, include, included=True)
    return document


def parse_file(document: IniDocument, path: str, *, included: bool = False) -> None:
    """Add the sections and keys of one file to ``document``."""
    text = _read_text(path)
    document.files.append(path)
    seen_here: set[tuple[str, str]] = set()
    section: Section | None = None
    entry_lines: dict[tuple[str, str], list[str]] = {}
    # (section, key) whose value indented lines continue; _IGNORED for a
    # repeated key, whose continuation lines are dropped with it.
    current: tuple[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if raw[0].isspace() and current is not None:
            part = _strip_comment(stripped)
            if part and current is not _IGNORED:
                entry_lines[current].append(part)
            continue
        current = None
        if stripped.startswith("["):
            section = _open_section(document, stripped, path, number)
            continue
        if section is None:
            raise ConfigError(
                f"expected a [section] header before {stripped!r}",
                path=path,
                line=number,
            )
        key, value = _split_option(stripped, path, number, section.name)
        ident = (section.name, key)
        if key in section.entries:
            _note_ignored(section, key, path, number, ident in seen_here, included)
            current = _IGNORED
            continue
        seen_here.add(ident)
        section.entries[key] = Entry(key, value, path, number)
        entry_lines[ident] = [value] if value != "" else []
        current = ident
    _join_continuations(document, entry_lines)
    if included:
        _warn_nested_includes(document, path)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as stream:
            return stream.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read config file: not valid UTF-8 at byte {exc.start}", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror or exc}", path=path
        ) from None


def _open_section(
    document: IniDocument, stripped: str, path: str, number: int
) -> Section:
    match = _HEADER.match(stripped)
    if match is None:
        raise ConfigError(
            f"expected a section header like [watcher:NAME], got {stripped!r}",
            path=path,
            line=number,
        )
    name = match.group("name")
    if not name.strip():
        raise ConfigError("empty section name", path=path, line=number)
    section = document.sections.get(name)
    if section is None:
        section = Section(name, path, number)
        document.sections[name] = section
    return section


def _split_option(
    stripped: str, path: str, number: int, section: str
) -> tuple[str, str]:
    match = re.search(r"[=:]", stripped)
    if match is None:
        raise ConfigError(
            f"expected 'key = value', got {stripped!r}",
            path=path,
            line=number,
            section=section,
        )
    key = stripped[: match.start()].rstrip()
    if not key:
        raise ConfigError(
            f"expected 'key = value', got {stripped!r} (the key is empty)",
            path=path,
            line=number,
            section=section,
        )
    value = _strip_comment(stripped[match.end() :])
    if value == '""':
        value = ""
    return key, value


def _strip_comment(value: str) -> str:
    match = _INLINE_COMMENT.search(value)
    if match is not None:
        value = value[: match.start()]
    return value.strip()


def _note_ignored(
    section: Section,
    key: str,
    path: str,
    number: int,
    same_file: bool,
    included: bool,
) -> None:
    first = section.entries[key]
    if same_file or not included:
        log.warning(
            "ignored repeated key file=%s line=%d section=%s key=%s kept=%s",
            path, number, section.name, key, first.where,
        )  # fmt: skip
    else:
        log.warning(
            "included file cannot override key file=%s line=%d section=%s "
            "key=%s kept=%s",
            path, number, section.name, key, first.where,
        )  # fmt: skip


def _join_continuations(
    document: IniDocument, entry_lines: dict[tuple[str, str], list[str]]
) -> None:
    for (section_name, key), parts in entry_lines.items():
        section = document.sections[section_name]
        entry = section.entries[key]
        joined = "\n".join(parts)
        if joined != entry.value:
            section.entries[key] = Entry(key, joined, entry.path, entry.line)


def _warn_nested_includes(document: IniDocument, path: str) -> None:
    circus = document.sections.get("circus")
    if circus is None:
        return
    for key in INCLUDE_KEYS:
        entry = circus.entries.get(key)
        if entry is not None and entry.path == path:
            log.warning(
                "ignored include in an included file (includes are not "
                "recursive) file=%s line=%d key=%s",
                entry.path, entry.line, key,
            )  # fmt: skip


def _included_files(
    document: IniDocument, expand: Callable[[Entry], str]
) -> Iterator[str]:
    circus = document.sections.get("circus")
    if circus is None:
        return
    base = os.path.dirname(document.path)
    patterns: list[str] = []
    include = circus.entries.get("include")
    if include is not None:
        patterns.extend(expand(include).split())
    include_dir = circus.entries.get("include_dir")
    folders = expand(include_dir).split() if include_dir is not None else []
    patterns.extend(os.path.join(folder, "*.ini") for folder in folders)
    # An empty drop-in folder is normal (a fresh /etc/circus/conf.d); a
    # missing one is worth a warning.
    quiet = {
        os.path.join(base, folder, "*.ini")
        for folder in folders
        if os.path.isdir(os.path.join(base, folder))
    }
    for pattern in patterns:
        full = os.path.join(base, pattern)
        matches = sorted(
            os.path.abspath(match) for match in glob.glob(full) if os.path.isfile(match)
        )
        if not matches and full not in quiet:
            log.warning("include matched no file pattern=%s base=%s", pattern, base)
        yield from matches
