"""Shared fixtures: the real daemon as a subprocess, driven over the protocol.

Each daemon gets a short private directory (ipc paths are limited to 107
bytes), ipc endpoints inside it, and a fake NOTIFY_SOCKET: the test waits
for READY=1 instead of sleeping or polling the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

REPO = Path(__file__).resolve().parent.parent
CIRCUSD = [sys.executable, "-m", "circusd.cli.daemon"]
READY_TIMEOUT = 10.0


def call(endpoint: str, command: str, timeout: float = 5.0, **props: Any) -> Any:
    """One request over a fresh DEALER socket; the reply as a dict."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        request_id = uuid.uuid4().hex
        sock.send(
            json.dumps(
                {"command": command, "properties": props, "id": request_id}
            ).encode()
        )
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise TimeoutError(f"no reply to {command} within {timeout}s")
            reply = json.loads(sock.recv())
            if reply.get("id") == request_id:
                return reply
    finally:
        sock.close()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    directory: Path
    config: Path
    log: Path
    notify: socket.socket
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.directory}/ctl.sock"

    @property
    def pubsub(self) -> str:
        return f"ipc://{self.directory}/pub.sock"

    def call(self, command: str, timeout: float = 10.0, **props: Any) -> Any:
        return call(self.endpoint, command, timeout, **props)

    def ok(self, command: str, **props: Any) -> Any:
        reply = self.call(command, **props)
        assert reply["status"] != "error", reply
        return reply

    def pids(self, name: str) -> list[int]:
        return list(self.ok("list", name=name)["pids"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def notifications(self, timeout: float = 0.0) -> list[str]:
        self.notify.settimeout(timeout or None)
        found = []
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                found.append(self.notify.recv(4096).decode())
                self.notify.settimeout(0.05)
        return found

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.notify.close()


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Wait for something outside the daemon (a file, a process) to happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(directory: Path, ini: str) -> Path:
    """The config, with ipc endpoints in ``directory`` unless it sets its own."""
    text = textwrap.dedent(ini).replace("{dir}", str(directory))
    if "[circus]" not in text:
        text = (
            f"[circus]\nendpoint = ipc://{directory}/ctl.sock\n"
            f"pubsub_endpoint = ipc://{directory}/pub.sock\n\n{text}"
        )
    config = directory / "circus.ini"
    config.write_text(text)
    return config


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(workdir: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(
        ini: str,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        ready: bool = True,
        python: str = sys.executable,
        stdout: int | None = None,  # circusd's stdout, if not its log
    ) -> Daemon:
        config = write_config(workdir, ini)
        notify_path = workdir / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        log = workdir / "circusd.log"
        environment = {**os.environ, "NOTIFY_SOCKET": str(notify_path), **(env or {})}
        environment.pop("JOURNAL_STREAM", None)
        with log.open("wb") as output:
            process = subprocess.Popen(
                [python, *CIRCUSD[1:], str(config), "--log-level", "debug", *args],
                stdout=output if stdout is None else stdout,
                stderr=output if stdout is not None else subprocess.STDOUT,
                env=environment,
                cwd=workdir,
                start_new_session=True,
            )
        daemon = Daemon(process, workdir, config, log, notify)
        started.append(daemon)
        if ready:
            notify.settimeout(READY_TIMEOUT)
            try:
                while "READY=1" not in notify.recv(4096).decode():
                    pass
            except TimeoutError:
                raise AssertionError(
                    f"circusd not ready in {READY_TIMEOUT}s:\n{daemon.output()}"
                ) from None
            # READY=1 comes once the endpoints answer; watchers start after.
            log_file = (
                Path(args[args.index("--log-output") + 1])
                if ("--log-output" in args)
                else log
            )
            wait_for(
                lambda: "started watchers=" in log_file.read_text(errors="replace"),
                what="watchers to finish starting",
            )
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


# -- real users ---------------------------------------------------------------


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    extra_group: str
    extra_gid: int
    home: str


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="session")
def test_user() -> Iterator[ServiceUser]:
    """A real unprivileged user with one supplementary group (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create users")
    suffix = uuid.uuid4().hex[:6]
    name, extra = f"cdsvc{suffix}", f"cdext{suffix}"
    _run("groupadd", extra)
    _run("useradd", "-m", "-G", extra, "-s", "/bin/sh", name)
    import grp
    import pwd

    entry = pwd.getpwnam(name)
    yield ServiceUser(
        name,
        entry.pw_uid,
        entry.pw_gid,
        extra,
        grp.getgrnam(extra).gr_gid,
        entry.pw_dir,
    )
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["groupdel", extra], capture_output=True)
