"""How a failed step of a child's set-up reads in `status` (circusd/_spawn.c
reports the step and its errno; process.py puts them in words)."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from circusd.config.model import WatcherConfig
from circusd.process import _failure
from circusd.users import Identity

IDENTITY = Identity(1234, 5678, (5678, 42), "svc")


def failure(step: str | None, code: int, **options: Any) -> str:
    config = WatcherConfig(name="w", cmd="run", **options)
    exc = OSError(code, os.strerror(code), step)
    return _failure(exc, "/srv/run", config, "/srv", IDENTITY)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("setuid", "cannot switch to uid 1234: Operation not permitted"),
        ("setgid", "cannot switch to gid 5678: Operation not permitted"),
        ("setgroups", "cannot switch to groups (5678, 42): Operation not permitted"),
        ("exec", "cannot execute /srv/run: Operation not permitted"),
        ("chdir", "cannot start in circusd's directory /srv: Operation not permitted"),
        ("clone", "cannot create a process (clone): Operation not permitted"),
        ("no_new_privs", "cannot set up the process (no_new_privs): Operation not"),
    ],
)
def test_each_failed_step_names_what_it_was_setting(step: str, expected: str) -> None:
    assert failure(step, errno.EPERM).startswith(expected)


def test_a_failed_rlimit_names_its_option() -> None:
    reason = failure("rlimit 7", errno.EPERM, rlimits={"nofile": (10, 20)})
    assert reason == "cannot set rlimit_nofile: Operation not permitted"
