"""Building a stream from a ``stdout_stream.*`` or ``stderr_stream.*`` block."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from circusd.config import values as v
from circusd.config.options import (
    STREAM_CLASSES,
    SYSLOG_FACILITIES,
    SYSLOG_PRIORITIES,
    syslog_level,
)
from circusd.errors import ValueProblem
from circusd.streams.base import STDOUT, Stream
from circusd.streams.console import FancyStdoutStream, StdoutStream
from circusd.streams.custom import CustomStream
from circusd.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream
from circusd.streams.journal import JournalStream, SyslogStream
from circusd.users import Identity

CIRCUS_PREFIX = "circus.stream."


def builtin_name(class_name: str) -> str | None:
    """The short name of one of circusd's own classes (also by Circus's
    dotted names), or None."""
    name = class_name.removeprefix(CIRCUS_PREFIX)
    return name if name in STREAM_CLASSES else None


def builtin_stream(class_name: str) -> bool:
    return builtin_name(class_name) is not None


def make_stream(
    conf: Mapping[str, str],
    watcher: str,
    which: int,
    owner: Identity | None = None,
    *,
    custom: bool = False,
) -> Stream:
    """The stream for one block; files are created for ``owner`` (the
    watcher's user). A class that is not built in is loaded only with
    ``custom`` (a config read from the config file)."""
    class_name = conf.get("class", "")
    name = builtin_name(class_name)
    if name is None:
        if custom and "." in class_name:
            options = {key: value for key, value in conf.items() if key != "class"}
            return CustomStream(class_name, options, which)
        raise ValueProblem(
            f"unknown stream class {class_name!r}; use one of "
            f"{', '.join(STREAM_CLASSES)} (a custom class can only be named in "
            "the config file)"
        )
    if name in ("StdoutStream", "FancyStdoutStream"):
        fd = sys.stdout.fileno() if which == STDOUT else sys.stderr.fileno()
        if name == "StdoutStream":
            return StdoutStream(fd)
        time_format = conf.get("time_format") or "%Y-%m-%d %H:%M:%S"
        return FancyStdoutStream(fd, watcher, time_format, conf.get("color"))
    if name in ("JournalStream", "SyslogStream"):
        priority = conf.get("priority")
        facility = conf.get("facility")
        kind = JournalStream if name == "JournalStream" else SyslogStream
        return kind(
            watcher,
            which,
            None
            if priority is None
            else syslog_level(priority, SYSLOG_PRIORITIES, "priority"),
            None
            if facility is None
            else syslog_level(facility, SYSLOG_FACILITIES, "facility"),
        )
    return _file_stream(name, conf, owner)


def _file_stream(name: str, conf: Mapping[str, str], owner: Identity | None) -> Stream:
    filename = conf.get("filename")
    if not filename:
        raise ValueProblem(f"{name} needs a filename")
    time_format = conf.get("time_format")
    backups = v.integer(conf.get("backup_count", "5"))
    if name == "TimedRotatingFileStream":
        return TimedRotatingFileStream(
            filename,
            conf.get("rotate_when", "H"),
            v.integer(conf.get("rotate_interval", "1")),
            backups,
            v.boolean(conf.get("utc", "false")),
            time_format,
            owner,
        )
    if name == "WatchedFileStream":
        return WatchedFileStream(filename, time_format, owner)
    max_bytes = v.size(conf.get("max_bytes", "0"))
    return FileStream(filename, max_bytes, backups, time_format, owner)
