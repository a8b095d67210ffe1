"""Helpers for the plugin tests: waiting for a plugin, reading its state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import REPO, Daemon, wait_for

PROGRAMS = REPO / "tests" / "programs"
ENV = {"PYTHONPATH": str(PROGRAMS)}


def ready(daemon: Daemon, name: str, count: int = 1, timeout: float = 15.0) -> int:
    """Wait until plugin NAME said it is ready (``count`` times); its pid."""
    marker = f"plugin ready plugin={name} pid="
    wait_for(
        lambda: daemon.output().count(marker) >= count,
        timeout,
        f"plugin {name} to be ready",
    )
    return daemon.pids(f"plugin:{name}")[0]


def status(daemon: Daemon, name: str) -> dict[str, Any]:
    return daemon.call("status", name=name)


def failed(daemon: Daemon, name: str, timeout: float = 15.0) -> str:
    """Wait until watcher NAME is failed; its reason."""
    reply = wait_for(
        lambda: (r := status(daemon, name))["status"] == "failed" and r,
        timeout,
        f"{name} to fail",
    )
    return str(reply.get("reason", ""))


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
