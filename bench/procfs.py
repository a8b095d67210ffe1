"""What the harness reads about a daemon and its children from /proc.

Plain file reads, cheap enough to repeat every millisecond. Every function
treats a process that has gone away as an answer (empty, None or zero), not
as an error, since children come and go while the harness looks.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children(pid: int) -> set[int]:
    """Direct children of every thread of ``pid``."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        text = _read(f"/proc/{pid}/task/{tid}/children")
        if text:
            found.update(int(word) for word in text.split())
    return found


def program(pid: int) -> str | None:
    """Base name of argv[0], or None if the process is gone."""
    text = _read(f"/proc/{pid}/cmdline")
    if not text:
        return None
    return Path(text.split("\0", 1)[0]).name


def cmdline(pid: int) -> list[str] | None:
    """argv of the process, or None if it is gone (or a zombie)."""
    text = _read(f"/proc/{pid}/cmdline")
    if not text:
        return None
    return text.rstrip("\0").split("\0")


def is_zombie(pid: int) -> bool:
    """True for a zombie and for a process that is gone altogether."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return True
    # The state comes right after the parenthesised command name.
    return text[text.rindex(")") + 2] in "ZX"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the whole process (all threads)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat); utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches, summed over all threads."""
    voluntary = involuntary = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0, 0
    for tid in tasks:
        for line in (_read(f"/proc/{pid}/task/{tid}/status") or "").splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary


def rss_bytes(pid: int) -> int:
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
