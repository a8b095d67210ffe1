"""A real terminal for tests: a private tmux server, read with capture-pane."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

TMUX_TIMEOUT = 10.0  # seconds for one tmux command


@dataclass(frozen=True)
class Pane:
    server: str
    target: str = "t"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.server, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=TMUX_TIMEOUT,
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.target, *keys)

    def exit_status(self) -> str | None:
        """The command's exit status once it has ended, else None."""
        dead, _, status = (
            self.tmux(
                "display-message", "-p", "-t", self.target,
                "#{pane_dead} #{pane_dead_status}",
            ).strip().partition(" ")
        )  # fmt: skip
        return status if dead == "1" else None


@contextlib.contextmanager
def terminal(
    command: list[str], env: Mapping[str, str] | None = None
) -> Iterator[Pane]:
    """``command`` in a 120x40 tmux window of a tmux server of its own. The
    pane stays after the command ends, so its exit status can be read."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    pane = Pane(f"cd-{uuid.uuid4().hex[:8]}")
    argv = ["env", *(f"{key}={value}" for key, value in (env or {}).items()), *command]
    subprocess.run(
        ["tmux", "-L", pane.server, "-f", "/dev/null", "new-session", "-d",
         "-s", pane.target, "-x", "120", "-y", "40", "cat"],
        check=True,
        timeout=TMUX_TIMEOUT,
    )  # fmt: skip
    try:
        pane.tmux("set-option", "-t", pane.target, "remain-on-exit", "on")
        pane.tmux("respawn-pane", "-k", "-t", pane.target, shlex.join(argv))
        yield pane
    finally:
        subprocess.run(
            ["tmux", "-L", pane.server, "kill-server"],
            timeout=TMUX_TIMEOUT,
            check=False,
            capture_output=True,
        )
