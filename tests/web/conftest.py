"""Fixtures for the console tests: a users file, a second real user for the
read-only policy, and a real circushttpd in front of a real circusd.

The console runs in one of two ways:

- ``debian``: as an unprivileged user (the endpoint_owner, or a member of
  readonly_group) with Debian's /usr/bin/python3 and its python3-aiohttp
  3.8.4 and python3-zmq 24, the versions a Debian package runs on, serving
  a listening socket the test passes (``--fd``, as circusd does);
- ``venv``: as root with the test venv's current aiohttp (``--allow-root``),
  on its own ``--host``/``--port``. circusd then lets it do everything, so
  this flavour serves only tests that do not depend on circusd's policy.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from circusd.users import groups_of
from circusd.web.passwords import Role, User, format_users, hash_password
from tests.conftest import REPO, Daemon, ServiceUser, wait_for
from tests.web.client import Http

DEBIAN_PYTHON = "/usr/bin/python3"
ARTIFACTS = REPO / "test-artifacts" / "browser"  # screenshots (gitignored)
PASSWORD = "correct horse battery staple"
READER_PASSWORD = "read only but long enough"
START_TIMEOUT = 15.0


def pytest_sessionstart(session: pytest.Session) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ARTIFACTS.is_dir() and any(ARTIFACTS.iterdir()):
        terminalreporter.write_line(f"browser screenshots: {ARTIFACTS}")


def debian_aiohttp() -> str | None:
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", "import aiohttp, zmq; print(aiohttp.__version__)"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@dataclass
class Console:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def http(self, cafile: str | None = None) -> Http:
        return Http(self.url, cafile)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class Reader:
    """A user in its own group, for ``readonly_group``."""

    name: str
    uid: int
    gid: int
    group: str


@pytest.fixture(scope="session")
def reader() -> Iterator[Reader]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create users")
    suffix = uuid.uuid4().hex[:6]
    name, group = f"cdread{suffix}", f"cdro{suffix}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-g", group, "-s", "/bin/sh", name], check=True)
    import pwd

    entry = pwd.getpwnam(name)
    yield Reader(name, entry.pw_uid, entry.pw_gid, group)
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture(scope="session")
def hashes() -> dict[str, str]:
    """Hashing is slow on purpose: once per session."""
    return {"alice": hash_password(PASSWORD), "rita": hash_password(READER_PASSWORD)}


@pytest.fixture
def users_file(workdir: Path, hashes: dict[str, str]) -> Path:
    """alice may act (role operate), rita may only look (role read)."""
    path = workdir / "console.users"
    users = {
        "alice": User("alice", Role.OPERATE, hashes["alice"]),
        "rita": User("rita", Role.READ, hashes["rita"]),
    }
    path.write_text(format_users(users))
    path.chmod(0o640)
    return path


def certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1, and its key."""
    cert, key = directory / "console.pem", directory / "console.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o644)  # the console's user must read it
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def flavour(request: pytest.FixtureRequest) -> str:
    """``debian`` (as root) or ``venv``; tests that must hold on both
    aiohttp versions ask for both with ``both_flavours``."""
    default = "debian" if os.geteuid() == 0 else "venv"
    return str(getattr(request, "param", default))


both_flavours = pytest.mark.parametrize("flavour", ["debian", "venv"], indirect=True)


RunAs = ServiceUser | Reader | None


@pytest.fixture
def start_console(
    start_daemon: Callable[..., Daemon], workdir: Path, users_file: Path
) -> Iterator[Callable[..., Console]]:
    # Set up after start_daemon, so torn down before it: consoles stop while
    # their daemon still answers.
    started: list[Console] = []

    def start(
        daemon: Daemon,
        user: RunAs = None,
        *args: str,
        ready: bool = True,
    ) -> Console:
        """circushttpd for ``daemon``: as ``user`` with Debian's Python, or
        as root from the venv when ``user`` is None."""
        log = workdir / f"console-{len(started)}.log"
        command: list[str]
        pass_fds: tuple[int, ...] = ()
        listener = None
        if user is None:
            port = free_port()
            command = [sys.executable, "-m", "circusd.web", "serve", "--allow-root",
                       "--port", str(port)]  # fmt: skip
            identity: dict[str, object] = {}
        else:
            if debian_aiohttp() is None:
                pytest.skip(f"{DEBIAN_PYTHON} lacks python3-aiohttp or python3-zmq")
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            pass_fds = (listener.fileno(),)
            command = [DEBIAN_PYTHON, "-m", "circusd.web", "serve",
                       "--fd", str(listener.fileno())]  # fmt: skip
            os.chown(users_file, 0, user.gid)
            identity = {
                "user": user.uid,
                "group": user.gid,
                "extra_groups": sorted(groups_of(user.uid, user.gid)),
            }
        command += ["--users", str(users_file), "--endpoint", daemon.endpoint, *args]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                pass_fds=pass_fds,
                start_new_session=True,
                **identity,  # type: ignore[arg-type]
            )
        if listener is not None:
            listener.close()  # the console holds its own copy
        scheme = "https" if "--certfile" in args else "http"
        console = Console(process, f"{scheme}://127.0.0.1:{port}", log)
        started.append(console)
        if ready:
            wait_for(
                lambda: (
                    "circushttpd started" in console.output()
                    or process.poll() is not None
                ),
                START_TIMEOUT,
                "circushttpd to start",
            )
            assert process.poll() is None, console.output()
        return console

    yield start
    for console in started:
        console.stop()


@pytest.fixture
def operator(flavour: str, request: pytest.FixtureRequest) -> RunAs:
    """Who runs the console for a flavour: the endpoint_owner, or root."""
    if flavour == "venv":
        return None
    return request.getfixturevalue("test_user")  # type: ignore[no-any-return]


def status(daemon: Daemon, watcher: str) -> str:
    return str(daemon.call("status", name=watcher)["status"])
