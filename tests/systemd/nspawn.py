"""A systemd container for the tests: systemd-nspawn boots a copy-on-write
overlay of this machine's own root, kept in a tmpfs.

Nothing of the host's systemd is used or changed: the overlay lives in a
tmpfs, the container has its own network namespace (--private-network), and
its cgroups live in a directory made for this run; ``close`` removes all of
it whatever state the container is in. Booting takes about 3 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil

NSPAWN = shutil.which("systemd-nspawn")
NSENTER = shutil.which("nsenter")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 30.0
# Units that would slow the boot or reach outside the container.
MASKED = ("postgresql", "systemd-timesyncd", "console-getty", "ssh", "docker")


def missing_capability() -> str | None:
    """Why no container can be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root to mount an overlay and boot a container"
    if NSPAWN is None:
        return "systemd-nspawn is not installed (apt-get install systemd-container)"
    if NSENTER is None:
        return "nsenter is not installed (util-linux)"
    return None


class Container:
    """A booted systemd-nspawn container over an overlay of /."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.upper = base / "upper"  # what the container changed
        self.name = f"circusd-test-{uuid.uuid4().hex[:8]}"
        self.cgroups = [
            Path("/sys/fs/cgroup", hierarchy, self.name)
            for hierarchy in ("systemd", "unified")
            if Path("/sys/fs/cgroup", hierarchy, "cgroup.procs").exists()
        ]
        self.log = base / "nspawn.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the container's PID 1, as the host sees it
        self.mounts: list[Path] = []

    # -- setting up --------------------------------------------------------------

    def mount(self) -> None:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,size=1g", "tmpfs", self.base],
            check=True,
        )
        self.mounts.append(self.base)
        for name in ("upper", "work", "root"):
            (self.base / name).mkdir()
        options = f"lowerdir=/,upperdir={self.base}/upper,workdir={self.base}/work"
        subprocess.run(
            ["mount", "-t", "overlay", "-o", options, "overlay", self.root],
            check=True,
        )
        self.mounts.append(self.root)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def boot(self, options: Sequence[str] = ()) -> None:
        """Boot, with extra nspawn ``options`` (--bind-ro=...), and wait until
        systemd says the system is running (or degraded)."""
        for cgroup in self.cgroups:
            cgroup.mkdir()
        command = [
            NSPAWN or "systemd-nspawn",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--private-network",
            "--register=no",
            "--keep-unit",
            *options,
            "--boot",
            *(f"systemd.mask={unit}.service" for unit in MASKED),
        ]
        # nspawn puts the container's cgroups below its own: move it into
        # this run's directory first, so nothing lands beside the host's.
        enter = "".join(f'echo $$ > "{c}/cgroup.procs"; ' for c in self.cgroups)
        with self.log.open("wb") as output:
            self.nspawn = subprocess.Popen(
                ["/bin/sh", "-c", enter + 'exec "$@"', "sh", *command],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"nspawn exited:\n{self.log.read_text()}")
            children = psutil.Process(self.nspawn.pid).children()
            if children and not self.pid:
                self.pid = children[0].pid
            if self.pid:
                state = self.run("systemctl", "is-system-running", check=False)
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.1)
        raise AssertionError(f"container did not boot:\n{self.log.read_text()}")

    # -- using it ------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container's namespaces, with a clean environment
        (``PATH`` and ``env`` only)."""
        variables = [f"{key}={value}" for key, value in (env or {}).items()]
        result = subprocess.run(
            [
                NSENTER or "nsenter",
                "-t",
                str(self.pid),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-C",
                "--",
                "env",
                "-i",
                f"PATH={CLEAN_PATH}",
                *variables,
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{self.journal()}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check).stdout

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--value", "-p", prop, unit).strip()

    def journal(self, unit: str = "circusd") -> str:
        return self.run(
            "journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False
        ).stdout[-4000:]

    # -- taking it down ------------------------------------------------------------

    def close(self) -> None:
        """Power off, then remove mounts and cgroups, whatever state it is in."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.pid:
                with contextlib.suppress(Exception):
                    self.run("systemctl", "poweroff", check=False, timeout=10)
            try:
                self.nspawn.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(10)
        for cgroup in self.cgroups:
            remove_cgroup_tree(cgroup)
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "--lazy", mount], check=False)
        with contextlib.suppress(OSError):
            Path("/run/systemd/nspawn/propagate", self.name).rmdir()


def remove_cgroup_tree(top: Path) -> None:
    """rmdir the (empty) cgroups nspawn left, deepest first."""
    if not top.exists():
        return
    for directory, _, _ in sorted(os.walk(top), key=lambda e: -len(e[0])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
