"""A real OpenSSH server on loopback, clients with their own ~/.ssh, and
circusd daemons behind it.

The sshd (tests/ssh/sshd.py, which the bench shares) runs as root with
everything in a private directory: its own host key, sshd_config,
authorized_keys per user, a port above 1024 on 127.0.0.1 only, and its log.
Each test gets a client home (HOME) with a known_hosts that trusts that
host key and a key that root accepts; circusctl runs as a subprocess with
that HOME and no ssh-agent unless a test starts one.
"""

from __future__ import annotations

import os
import pwd
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import READY_TIMEOUT, Daemon, write_config
from tests.ssh.sshd import SSHD, SSHServer, free_port, keygen, start_sshd

CIRCUSCTL = Path(sys.executable).with_name("circusctl")
CIRCUSD = [sys.executable, "-m", "circusd.cli.daemon"]
RUN_TIMEOUT = 60.0


@pytest.fixture
def free_tcp_port() -> Callable[[], int]:
    return free_port


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd logs in root and test users")
    if not SSHD.exists():
        pytest.skip("sshd is missing: apt-get install openssh-server")
    directory = Path(tempfile.mkdtemp(prefix="cdssh-", dir="/tmp"))
    try:
        server = start_sshd(directory)
    except RuntimeError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise AssertionError(str(exc)) from None
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def root_key(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key that root accepts."""
    path = tmp_path_factory.mktemp("keys") / "root_ed25519"
    sshd.authorize("root", keygen(path))
    return path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float


@dataclass
class Client:
    """A user's side: HOME with ~/.ssh, and circusctl run with it."""

    home: Path
    key: Path
    sshd: SSHServer
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    def target(self, user: str = "root") -> str:
        return f"{user}@127.0.0.1:{self.sshd.port}"

    def environment(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("SSH_AUTH_SOCK", "CIRCUSCTL_ENDPOINT")
        }
        return {**env, "HOME": str(self.home), **self.env, **extra}

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """circusctl in the background, without a controlling terminal."""
        return subprocess.Popen(
            [str(CIRCUSCTL), *args],
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> Result:
        started = time.monotonic()
        completed = subprocess.run(
            [str(CIRCUSCTL), *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # no terminal to ask a passphrase on
        )
        return Result(
            completed.returncode,
            completed.stdout,
            completed.stderr,
            time.monotonic() - started,
        )

    def ssh(self, *args: str, user: str = "root", key: Path | None = None) -> Result:
        """circusctl --ssh USER@127.0.0.1:PORT --ssh-keyfile KEY ARGS..."""
        keyfile = str(key or self.key)
        return self.run("--ssh", self.target(user), "--ssh-keyfile", keyfile, *args)


@pytest.fixture
def client(sshd: SSHServer, root_key: Path) -> Iterator[Client]:
    home = Path(tempfile.mkdtemp(prefix="cdhome-", dir="/tmp"))
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    yield Client(home, root_key, sshd)
    shutil.rmtree(home, ignore_errors=True)


# -- a user other than root -------------------------------------------------


@dataclass(frozen=True)
class LoginUser:
    name: str
    uid: int
    key: Path


@pytest.fixture(scope="session")
def login_user(
    sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoginUser]:
    """A real unprivileged user that can log in over the test sshd."""
    name = f"cdssh{uuid.uuid4().hex[:6]}"
    # '*' instead of useradd's '!': with UsePAM no, sshd refuses locked accounts.
    subprocess.run(
        ["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", "-p", "*", name],
        check=True,
        capture_output=True,
    )
    key = tmp_path_factory.mktemp("userkeys") / "user_ed25519"
    sshd.authorize(name, keygen(key))
    yield LoginUser(name, pwd.getpwnam(name).pw_uid, key)
    subprocess.run(["userdel", name], capture_output=True)


# -- passwords -----------------------------------------------------------------


@pytest.fixture(scope="session")
def password_sshd() -> Iterator[SSHServer]:
    """A second sshd that also takes passwords, through PAM, as password and
    keyboard-interactive (Debian's /etc/pam.d/sshd: pam_unix)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd logs in test users")
    if not SSHD.exists():
        pytest.skip("sshd is missing: apt-get install openssh-server")
    directory = Path(tempfile.mkdtemp(prefix="cdsshpw-", dir="/tmp"))
    settings = (
        "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n"
    )
    try:
        server = start_sshd(directory, settings)
    except RuntimeError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise AssertionError(str(exc)) from None
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class PasswordUser:
    name: str
    password: str


@pytest.fixture(scope="session")
def password_user(password_sshd: SSHServer) -> Iterator[PasswordUser]:
    """A real user with a password and no key."""
    name = f"cdpw{uuid.uuid4().hex[:6]}"
    password = secrets.token_hex(12)  # no leading "-" for tmux send-keys
    subprocess.run(
        ["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", name],
        check=True,
        capture_output=True,
    )
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    yield PasswordUser(name, password)
    remove_user(name)


def remove_user(name: str) -> None:
    """userdel, once the user's last sshd session process has ended."""
    deadline = time.monotonic() + 10
    while subprocess.run(["userdel", name], capture_output=True).returncode == 8:
        if time.monotonic() > deadline:  # 8: still logged in
            raise AssertionError(f"test user {name} is still logged in")
        time.sleep(0.1)


def run_on_terminal(
    client: Client,
    args: list[str],
    prompt: str,
    answers: list[str],
    status: int = 0,
    delay: float = 0.0,
) -> str:
    """Run circusctl with a pseudo-terminal as its controlling terminal and
    answer each ``prompt`` with the next answer (``delay`` seconds after it
    shows); returns what it wrote there, once it has exited with ``status``."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        ["setsid", "--ctty", str(CIRCUSCTL), *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=client.environment(),
    )
    os.close(terminal)
    seen = ""
    answered = 0
    deadline = time.monotonic() + 30 + delay * len(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(controller, 4096).decode(errors="replace")
                except OSError:  # the terminal closed: the process is done
                    break
                if seen.count(prompt) > len(answers):
                    raise AssertionError(f"asked once more than expected: {seen!r}")
                if seen.count(prompt) > answered:
                    time.sleep(delay)
                    os.write(controller, answers[answered].encode())
                    answered += 1
            elif process.poll() is not None:
                break
        assert process.wait(10) == status, seen
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return seen


# -- several daemons ----------------------------------------------------------


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


class Fleet:
    """``start_fleet(n, ini)``: n daemons, each in its own directory;
    ``start_fleet.relaunch(daemon)``: that daemon again, after it stopped.

    Like tests.conftest's start_daemon (ipc endpoints under a private
    directory, readiness from a fake NOTIFY_SOCKET), which runs one daemon
    per test.
    """

    def __init__(self) -> None:
        self.started: list[Daemon] = []

    def __call__(self, count: int, ini: str) -> list[Daemon]:
        for _ in range(count):
            directory = Path(tempfile.mkdtemp(prefix="cdf-", dir="/tmp"))
            directory.chmod(0o755)
            self.started.append(_launch(directory, write_config(directory, ini)))
        return self.started[-count:]

    def relaunch(self, daemon: Daemon) -> Daemon:
        assert daemon.process.poll() is not None, "the daemon still runs"
        (daemon.directory / "notify.sock").unlink(missing_ok=True)
        self.started.append(_launch(daemon.directory, daemon.config))
        return self.started[-1]

    def stop_all(self) -> None:
        for daemon in self.started:
            daemon.stop()
        for directory in {daemon.directory for daemon in self.started}:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    yield fleet
    fleet.stop_all()


def _launch(directory: Path, config: Path) -> Daemon:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(directory / "notify.sock"))
    log = directory / "circusd.log"
    environment = {**os.environ, "NOTIFY_SOCKET": str(directory / "notify.sock")}
    environment.pop("JOURNAL_STREAM", None)
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*CIRCUSD, str(config), "--log-level", "debug"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=directory,
            start_new_session=True,
        )
    daemon = Daemon(process, directory, config, log, notify)
    notify.settimeout(READY_TIMEOUT)
    try:
        while "READY=1" not in notify.recv(4096).decode():
            pass
    except TimeoutError:
        daemon.stop()
        raise AssertionError(f"circusd not ready:\n{daemon.output()}") from None
    return daemon
