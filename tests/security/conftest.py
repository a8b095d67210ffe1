"""Fixtures for the security tests: a second real user, and requests sent
as a given user from a separate process.

The test's own interpreter may live where other users cannot reach it, so a
request "as USER" runs ``zmtp_client.py`` (standard library only) under
``runuser`` with the system's python3.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CIRCUSD, READY_TIMEOUT, ServiceUser, wait_for

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Intruder:
    name: str
    uid: int
    gid: int


@pytest.fixture(scope="session")
def intruder() -> Iterator[Intruder]:
    """A second unprivileged user, with no business with circusd."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create users")
    name = f"cdother{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    entry = pwd.getpwnam(name)
    yield Intruder(name, entry.pw_uid, entry.pw_gid)
    subprocess.run(["userdel", name], capture_output=True)


Reply = dict[str, Any] | str


@pytest.fixture
def request_as(workdir: Path) -> Callable[..., Reply]:
    """``request_as(user, endpoint, command, **properties)``: the reply as a
    dict, or ``"CONNECT-ERROR EACCES"`` when the socket refused the user."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to send requests as other users")
    client = workdir / "zmtp_client.py"
    shutil.copy(HERE / "zmtp_client.py", client)
    client.chmod(0o644)

    def send(user: str, endpoint: str, command: str, **properties: Any) -> Reply:
        message = json.dumps({"command": command, "properties": properties, "id": 1})
        result = subprocess.run(
            ["runuser", "-u", user, "--", SYSTEM_PYTHON, str(client), endpoint,
             message],
            capture_output=True, text=True, timeout=15, cwd="/",
        )  # fmt: skip
        output = result.stdout.strip()
        if output.startswith("{"):
            return dict(json.loads(output))
        return output or result.stderr.strip()

    return send


def audit_lines(log: str, event: str = "refused") -> list[str]:
    return [line for line in log.splitlines() if f"circusd.audit: {event} " in line]


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status: the child runs its program, with its whole identity,
    from the moment circusd reports its pid (circusd/_spawn.c)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


@pytest.fixture
def owner(test_user: ServiceUser) -> ServiceUser:
    return test_user


# -- clients run as another user -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_as(
    user: str, workdir: Path, client: str, *args: object
) -> subprocess.Popen[str]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is needed to act as another user")
    script = workdir / client
    for name in (client, "zmtp_client.py"):  # the subscriber imports the latter
        if not (workdir / name).exists():  # never rewritten under a reader
            shutil.copy(HERE / name, workdir / name)
            (workdir / name).chmod(0o644)
    return subprocess.Popen(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answer(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=60)
    return output.strip()


def sent(process: subprocess.Popen[str], timeout: float = 30) -> bool:
    """Whether ``process`` printed ``sent`` (it holds its connection on)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return bool(ready) and process.stdout.readline().strip() == "sent"


@contextlib.contextmanager
def circusd_as_user(
    workdir: Path, user: ServiceUser, name: str, watchers: str
) -> Iterator[str]:
    """circusd as an ordinary user (uid ``user`` in a user namespace) with
    ``watchers`` (INI text); yields its endpoint, ipc://WORKDIR/NAME.sock."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed")
    probe = subprocess.run(
        ["unshare", "--user", f"--map-user={user.uid}", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {probe.stderr!r}")
    endpoint = f"ipc://{workdir}/{name}.sock"
    config = workdir / f"{name}.ini"
    config.write_text(
        f"[circus]\nendpoint = {endpoint}\n"
        f"pubsub_endpoint = ipc://{workdir}/{name}pub.sock\n\n{watchers}"
    )
    with (workdir / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--user", f"--map-user={user.uid}",
             f"--map-group={user.gid}", *CIRCUSD, str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: (workdir / f"{name}.sock").exists(), READY_TIMEOUT)
            yield endpoint
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
