"""A real terminal for tests: a private tmux server, read with capture-pane."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

TMUX_TIMEOUT = 10.0  # seconds for one tmux command


@dataclass(frozen=True)
class Pane:
    server: str
    directory: Path  # the tmux config and the command's exit status

    def tmux(self, *args: str, check: bool = False) -> str:
        config = str(self.directory / "tmux.conf")
        done = subprocess.run(
            ["tmux", "-L", self.server, "-f", config, *args],
            capture_output=True,
            text=True,
            timeout=TMUX_TIMEOUT,
            check=check,
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def exit_status(self) -> str | None:
        """The command's exit status once it has ended, else None. (Written
        by the shell that ran it: tmux was seen to leave an exited process
        unreaped, its pane never marked dead.)"""
        status = self.directory / "status"
        return status.read_text().strip() or None if status.exists() else None


@contextlib.contextmanager
def terminal(
    command: list[str], env: Mapping[str, str] | None = None
) -> Iterator[Pane]:
    """``command`` in a 120x40 window of a tmux server of its own; the
    window stays after the command ends."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    with tempfile.TemporaryDirectory(prefix="cdtmux-") as directory:
        pane = Pane(f"cd-{uuid.uuid4().hex[:8]}", Path(directory))
        (pane.directory / "tmux.conf").write_text("set -g remain-on-exit on\n")
        environment = [f"{key}={value}" for key, value in (env or {}).items()]
        script = f'"$@"; echo $? > {shlex.quote(directory)}/status.new; ' + (
            f"mv {shlex.quote(directory)}/status.new {shlex.quote(directory)}/status"
        )
        argv = ["sh", "-c", script, "sh", "env", *environment, *command]
        pane.tmux(
            "new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
            shlex.join(argv), check=True,
        )  # fmt: skip
        try:
            yield pane
        finally:
            pane.tmux("kill-server")
