"""A private OpenSSH server on loopback, for tests/ssh and bench/ (ssh).

Everything lives in one directory: its own host key, sshd_config,
authorized_keys per user (``authorized/USER``), and its log. It listens on
127.0.0.1 only, on a free port above 1024, and runs as root (it must, to
log in more than one user). It needs nothing from the test suite, so that
the bench can import this file too.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
START_TIMEOUT = 10.0


def keygen(path: Path, passphrase: str = "", kind: str = "ed25519") -> str:
    """A new key pair at ``path``; returns the public line ``TYPE BASE64``."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SSHServer:
    directory: Path
    port: int
    host_public: str  # "ssh-ed25519 AAAA..."
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_public}\n"

    def authorize(self, user: str, public: str) -> None:
        path = self.directory / "authorized" / user
        with path.open("a") as stream:
            stream.write(public + "\n")
        path.chmod(0o644)

    def connections(self) -> list[psutil.Process]:
        """sshd's per-connection processes (one per client connection)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.process.pid).children()
        return []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_sshd(directory: Path, settings: str = "") -> SSHServer:
    """Start sshd with its files in ``directory`` (made world-readable, for
    the users it logs in) and wait until it listens. ``settings`` (lines of
    sshd_config) come first, so they win over the defaults below."""
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    (directory / "authorized").mkdir(mode=0o755)
    host_public = keygen(directory / "host_ed25519")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        settings
        + textwrap.dedent(f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {directory}/host_ed25519
            PidFile none
            AuthorizedKeysFile {directory}/authorized/%u
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            AllowTcpForwarding yes
            AllowStreamLocalForwarding yes
            MaxStartups 100
            LogLevel VERBOSE
            """)
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
    with (directory / "sshd.log").open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = SSHServer(directory, port, host_public, process)
    deadline = time.monotonic() + START_TIMEOUT
    while "Server listening" not in server.log:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"sshd did not start:\n{server.log}")
        time.sleep(0.02)
    return server
