"""Comparing two loaded configurations, as reloadconfig does."""

from __future__ import annotations

import textwrap
from pathlib import Path

from circusd.config.diff import Changes, diff
from circusd.config.loader import load
from circusd.config.model import Config

BASE = """
[circus]
endpoint = tcp://127.0.0.1:7555
[socket:web]
port = 8000
[watcher:web]
cmd = app --fd $(circus.sockets.web)
numprocesses = 2
[watcher:worker]
cmd = worker
[plugin:flap]
use = pkg.Flapping
"""


def load_text(directory: Path, text: str, name: str = "circus.ini") -> Config:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load(str(path), {"PATH": "/bin"})


def test_same_config_has_no_changes(tmp_path: Path) -> None:
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, BASE, "b.ini"))
    assert result.empty
    assert not result.watchers and not result.sockets and not result.plugins


def test_moving_a_section_within_the_file_is_not_a_change(tmp_path: Path) -> None:
    moved = "\n\n# comment\n" + BASE
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, moved, "b.ini"))
    assert result.empty


def test_added_and_removed_watchers(tmp_path: Path) -> None:
    new = BASE.replace("[watcher:worker]", "[watcher:cron]")
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.watchers == Changes(added=("cron",), removed=("worker",))
    assert not result.empty


def test_only_numprocesses_changed_is_reported_apart(tmp_path: Path) -> None:
    new = BASE.replace("numprocesses = 2", "numprocesses = 5")
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.numprocesses == ("web",)
    assert result.watchers.changed == ()


def test_numprocesses_with_another_change_is_a_plain_change(tmp_path: Path) -> None:
    new = BASE.replace("numprocesses = 2", "numprocesses = 5\nmax_age = 60")
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.numprocesses == ()
    assert result.watchers.changed == ("web",)


def test_environment_change_is_a_watcher_change(tmp_path: Path) -> None:
    new = BASE + "[env:worker]\nLEVEL = 2\n"
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.watchers.changed == ("worker",)


def test_socket_changes(tmp_path: Path) -> None:
    new = BASE.replace("port = 8000", "port = 8001") + "[socket:admin]\nport = 9\n"
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.sockets == Changes(added=("admin",), changed=("web",))


def test_plugin_changes(tmp_path: Path) -> None:
    new = BASE + "max_retry = 3\n"
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.plugins == Changes(changed=("flap",))


def test_circus_section_change(tmp_path: Path) -> None:
    new = BASE.replace("7555", "7556\npubsub_endpoint = tcp://127.0.0.1:7557")
    result = diff(load_text(tmp_path, BASE), load_text(tmp_path, new, "b.ini"))
    assert result.circus_changed
    assert not result.watchers
