"""Helpers for the systemd tests: a stand-in for systemd's notification socket
that records who sent each message, and circusd started the way systemd (or
systemd-socket-activate) starts it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, call, write_config

CIRCUSD = [sys.executable, "-m", "circusd.cli.daemon"]
UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Message:
    """One sd_notify datagram and the pid the kernel says sent it."""

    pid: int
    fields: dict[str, str]
    received: float  # time.monotonic()

    def __contains__(self, line: str) -> bool:
        key, _, value = line.partition("=")
        return self.fields.get(key) == value


class NotifyManager:
    """Plays systemd's side of sd_notify: an AF_UNIX datagram socket with
    SO_PASSCRED, so each message carries the sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.socket.bind(str(path))
        self.messages: list[Message] = []

    def receive(self, timeout: float) -> Message | None:
        self.socket.settimeout(max(timeout, 0.001))
        try:
            data, ancillary, _, _ = self.socket.recvmsg(
                4096, socket.CMSG_SPACE(UCRED.size)
            )
        except TimeoutError:
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[: UCRED.size])[0]
        fields = dict(
            line.partition("=")[::2] for line in data.decode().splitlines() if line
        )
        message = Message(pid, fields, time.monotonic())
        self.messages.append(message)
        return message

    def wait_for(self, line: str, timeout: float = 10.0) -> Message:
        """The next message holding ``KEY=VALUE`` (or ``KEY=`` for any value)."""
        key, _, value = line.partition("=")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message.fields:
                if not value or message.fields[key] == value:
                    return message
        raise AssertionError(
            f"no {line} within {timeout}s; got {[m.fields for m in self.messages]}"
        )

    def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives in the next ``seconds``."""
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                found.append(message)
        return found

    def close(self) -> None:
        self.socket.close()


@dataclass
class Run:
    """A circusd process started by a test."""

    process: subprocess.Popen[bytes]
    directory: Path
    log: Path
    manager: NotifyManager
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.directory}/ctl.sock"

    def call(self, command: str, timeout: float = 10.0, **props: object) -> dict:
        return call(self.endpoint, command, timeout, **props)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def launch(workdir: Path) -> Iterator[Callable[..., Run]]:
    """Start circusd with a notify socket, optionally behind a launcher
    (``prefix``, e.g. systemd-socket-activate), with exactly ``env``."""
    runs: list[Run] = []

    def start(
        ini: str,
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
        stdin: int | None = subprocess.DEVNULL,
    ) -> Run:
        config = write_config(workdir, ini)
        manager = NotifyManager(workdir / f"notify{len(runs)}.sock")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "NOTIFY_SOCKET": str(manager.path),
            **(env or {}),
        }
        log = workdir / f"circusd{len(runs)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*prefix, *CIRCUSD, str(config), "--log-level", "debug"],
                stdin=stdin,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=workdir,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        run = Run(process, workdir, log, manager)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()
        run.manager.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(address: str | tuple[str, int], timeout: float = 5.0) -> None:
    """Until something listens on ``address`` (a unix path or host and port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(address, str):
            if os.path.exists(address):
                return
        else:
            with socket.socket() as probe:
                # A listener exists once the port is taken for binding.
                try:
                    probe.bind(address)
                except OSError:
                    return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {address} after {timeout}s")


def socket_inode(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def fd_flags(pid: int, fd: int) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as handle:
        for line in handle:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags for fd {fd} of {pid}")
