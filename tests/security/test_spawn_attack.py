"""Attacks on circusd._spawn and its caller: hostile values from config files
and from the endpoint owner's `add`/`set`, descriptors that must not leak,
identities that must be whole, and failures that must leave circusd up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.root


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_bad_command_does_not_leak_circusds_output_pipes(start_daemon, workdir):
    """A command the spawner refuses before any child exists (a null byte,
    a lone surrogate) fails the watcher with the reason, and every pipe
    made for the child's output is closed again, however often it retries."""
    daemon = start_daemon("""
        [watcher:plain]
        cmd = sleep 300
        """)
    before = open_fds(daemon.process.pid)
    for name, cmd in (("surrogate", "sleep \ud800"),):
        daemon.ok(
            "add",
            name=name,
            cmd=cmd,
            start=True,
            options={
                "max_retry": 3,
                "stdout_stream.class": "FileStream",
                "stdout_stream.filename": str(workdir / f"{name}.out"),
                "stderr_stream.class": "FileStream",
                "stderr_stream.filename": str(workdir / f"{name}.err"),
            },
        )
    for name in ("surrogate",):
        wait_for(
            lambda: daemon.ok("status", name=name)["status"] == "failed",
            timeout=30,
            what=f"watcher {name} to fail",
        )
        reason = daemon.ok("status", name=name)["reason"]
        assert "\n" not in reason
    assert open_fds(daemon.process.pid) <= before
    assert len(daemon.pids("plain")) == 1


def test_command_missing_from_path_never_runs_a_file_of_the_working_dir(
    start_daemon, workdir
):
    """A bare command name is looked up in PATH only, as execvp does: when
    PATH has no such program, a file of that name in the working directory
    (which its owner may have planted there) must not run, least of all as
    root."""
    uploads = workdir / "uploads"
    uploads.mkdir()
    uploads.chmod(0o1777)
    marker = workdir / "planted-ran"
    planted = uploads / "cd-backup-tool"
    planted.write_text(f"#!/bin/sh\nid -u > {marker}\nexec sleep 300\n")
    planted.chmod(0o755)
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = cd-backup-tool --now
        working_dir = {uploads}
        max_retry = 0

        [watcher:plain]
        cmd = sleep 300
        """)
    wait_for(
        lambda: marker.exists() or daemon.ok("status", name="w").get("reason"),
        what="the planted file to run or the watcher to fail",
    )
    assert not marker.exists(), f"ran {planted} as uid {marker.read_text()}"
    reason = daemon.ok("status", name="w")["reason"]
    assert daemon.pids("w") == []
    assert "cannot execute cd-backup-tool" in reason and "PATH" in reason, reason
    assert len(daemon.pids("plain")) == 1
