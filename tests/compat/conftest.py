"""Circus 0.19 and circusd side by side, on the same INI, for compat tests.

`start_pair(ini)` writes the INI (``{dir}`` stands for each daemon's own
private directory) and starts Circus's daemon from ``.peers/circus`` and
ours through the shared `start_daemon` fixture. Each side is a `Peer`:
its endpoint, its directory, and `ctl(...)`, which runs Circus's own
circusctl against it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO, Daemon, call, wait_for

PEER_BIN = REPO / ".peers" / "circus" / "bin"
CIRCUSCTL = PEER_BIN / "circusctl"
CIRCUS_DAEMON = PEER_BIN / "circusd"
PEER_READY = REPO / ".peers" / "circus" / ".installed"
CTL_TIMEOUT = 30.0  # seconds for one circusctl run, start to exit
# Circus refuses a command while another holds its global lock (reference
# §2.1); its own clients retry, and so does `Peer.ctl` for Circus only.
CONFLICT = "is already running"
CONFLICT_RETRIES = 20


def wait_for_peer() -> None:
    """Skip when Circus's peer venv is absent; wait while it is being built."""
    if not PEER_BIN.parent.exists():
        pytest.skip("Circus 0.19 peer absent: run `make peers` (builds .peers/circus)")
    # `make peers` may be running in another shell right now: give it time.
    deadline = time.monotonic() + 90
    while not PEER_READY.exists() and time.monotonic() < deadline:
        time.sleep(1)
    if not (PEER_READY.exists() and CIRCUSCTL.exists()):
        pytest.fail(
            ".peers/circus is incomplete after 90s: re-run `make peers`",
            pytrace=False,
        )


@dataclass(frozen=True)
class Ctl:
    """One circusctl run: exit code and both output streams."""

    rc: int
    out: str
    err: str


@dataclass
class Peer:
    kind: str  # "circus" or "circusd"
    directory: Path
    process: subprocess.Popen[bytes]
    output: Callable[[], str]  # the daemon's log so far
    seen_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.directory}/ctl.sock"

    def call(self, command: str, **props: Any) -> Any:
        return call(self.endpoint, command, 10.0, **props)

    def tree(self) -> set[int]:
        """Pids of the daemon and everything below it, remembered for later."""
        try:
            found = {p.pid for p in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            found = set()
        self.seen_pids |= found | {self.pid}
        return found

    def ctl(self, *args: str) -> Ctl:
        """Circus's circusctl against this daemon."""
        argv = [str(CIRCUSCTL), "--endpoint", self.endpoint, "--timeout", "10", *args]
        self.tree()
        for _ in range(CONFLICT_RETRIES):
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=CTL_TIMEOUT
            )
            result = Ctl(done.returncode, done.stdout, done.stderr)
            if self.kind != "circus" or CONFLICT not in result.out + result.err:
                break
            time.sleep(0.25)
        self.tree()
        return result

    def pids(self, name: str) -> list[int]:
        reply = self.call("list", name=name)
        assert reply["status"] == "ok", reply
        self.seen_pids.update(reply["pids"])
        return list(reply["pids"])

    def status(self, name: str) -> str:
        return str(self.call("status", name=name)["status"])

    def wait_active(self, watchers: int) -> None:
        """Wait until every watcher is active (neither daemon says so itself)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.kind} exited:\n{self.output()}")
            with contextlib.suppress(TimeoutError):
                statuses = call(self.endpoint, "status", 0.5).get("statuses", {})
                return len(statuses) == watchers and all(
                    state == "active" for state in statuses.values()
                )
            return False

        wait_for(ready, timeout=20, what=f"{self.kind} to start its watchers")


@dataclass
class Pair:
    circus: Peer
    ours: Peer

    def __iter__(self) -> Iterator[Peer]:
        return iter((self.circus, self.ours))

    def settle(self, name: str, count: int, state: str = "active") -> None:
        """Wait until both daemons run `count` processes of `name` in `state`."""
        for peer in self:
            wait_for(
                lambda peer=peer: (
                    peer.status(name) == state and len(peer.pids(name)) == count
                ),
                timeout=20,
                what=f"{peer.kind}: {name} {state} with {count} processes",
            )


class CircusProcess:
    """Circus's circusd in the foreground, in its own session and directory."""

    def __init__(self, ini: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))
        self.directory.chmod(0o755)
        self.log = self.directory / "circusd.log"
        config = self.directory / "circus.ini"
        config.write_text(ini.replace("{dir}", str(self.directory)))
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [str(CIRCUS_DAEMON), str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
        self.children: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        # Circus puts each child in a session of its own: note them first, so
        # that any it leaves behind can be ended by pid.
        with contextlib.suppress(psutil.NoSuchProcess):
            self.children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for child in self.children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():  # same pid *and* start time
                    child.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def start_pair(
    start_daemon: Callable[..., Daemon],
) -> Iterator[Callable[[str], Pair]]:
    wait_for_peer()
    started: list[CircusProcess] = []

    def start(ini: str) -> Pair:
        text = textwrap.dedent(ini)
        watchers = text.count("[watcher:")
        circus = CircusProcess(text)
        started.append(circus)
        ours = start_daemon(text)
        pair = Pair(
            Peer("circus", circus.directory, circus.process, circus.output),
            Peer("circusd", ours.directory, ours.process, ours.output),
        )
        for peer in pair:
            peer.wait_active(watchers)
        return pair

    yield start
    for circus in started:
        circus.stop()
