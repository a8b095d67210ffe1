"""circusd under a real systemd: a container booted from a copy-on-write
overlay of this machine's own root, with the units from units/ and circusd
from this checkout.

The container is booted once for the module (about 3 s) and the tests run in
order against it. Nothing of the host's systemd is used or changed: the
overlay lives in a tmpfs, the container has its own network namespace, and
its cgroups live in a directory made for this run; all are removed at the end
whatever happens.

circusd runs in the container from this checkout, bound read-only at
/opt/circusd/src, with the packages of the test venv bound at
/opt/circusd/site-packages, by Debian's /usr/bin/python3 (the test venv's own
interpreter may live under /root, which ProtectHome-style hardening and a
future package would not see). /usr/bin/circusd and /usr/bin/circusctl are
small scripts in the overlay, so the units are installed unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.root
NSPAWN = shutil.which("systemd-nspawn")
NSENTER = shutil.which("nsenter")
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CONTROL = "ipc:///run/circus/ctl.sock"
BOOT_TIMEOUT = 30.0
# Units that would slow the boot or reach outside the container.
MASKED = ("postgresql", "systemd-timesyncd", "console-getty", "ssh", "docker")

PYTHON_IN_CONTAINER = "/usr/bin/python3"
LAUNCHER = """#!{python} -I
import sys

sys.path[:0] = ["/opt/circusd/src", "/opt/circusd/site-packages"]
from circusd.cli.{module} import main

main()
"""

WEB_SOCKET_UNIT = """\
[Unit]
Description=a socket that circusd hands to its [socket:web]

[Socket]
ListenStream=127.0.0.1:8080
FileDescriptorName=web
Service=circusd.service
"""


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount an overlay and boot a container"
    if NSPAWN is None:
        return "systemd-nspawn is not installed (apt-get install systemd-container)"
    if NSENTER is None:
        return "nsenter is not installed (util-linux)"
    if not os.access(PYTHON_IN_CONTAINER, os.X_OK):
        return f"{PYTHON_IN_CONTAINER} is missing"
    version = subprocess.run(
        [PYTHON_IN_CONTAINER, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        return (
            f"{PYTHON_IN_CONTAINER} is Python {version}, the test venv "
            f"{sys.version_info[:2]}: the venv's compiled packages would not load"
        )
    return None


class Container:
    """A booted systemd-nspawn container over an overlay of /."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
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

    def install(self) -> None:
        for module, name in (("daemon", "circusd"), ("circusctl", "circusctl")):
            self.write(
                f"/usr/bin/{name}",
                LAUNCHER.format(python=PYTHON_IN_CONTAINER, module=module),
                0o755,
            )
        for unit in (REPO / "units").iterdir():
            self.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
        self.write("/etc/systemd/system/circusd-web.socket", WEB_SOCKET_UNIT)
        for path in ("/opt/circusd/src", "/opt/circusd/site-packages"):
            (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/circusd-test").mkdir(parents=True, exist_ok=True)

    def boot(self) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir()
        site = sysconfig.get_paths()["purelib"]
        command = [
            NSPAWN or "systemd-nspawn",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--private-network",
            "--register=no",
            "--keep-unit",
            f"--bind-ro={REPO}:/opt/circusd/src",
            f"--bind-ro={site}:/opt/circusd/site-packages",
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
        self, *argv: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container's namespaces, with a clean environment."""
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

    def circusctl(self, *args: str, timeout: float = 5.0) -> str:
        return self.run(
            "circusctl",
            "--endpoint",
            CONTROL,
            "--timeout",
            str(timeout),
            *args,
            timeout=timeout + 10,
        ).stdout

    def journal(self, unit: str = "circusd") -> str:
        return self.run(
            "journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False
        ).stdout[-4000:]

    def configure(self, text: str) -> None:
        self.write("/etc/circus/circusd.ini", text)

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


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="circusd-ct-", dir="/tmp"))
    box = Container(base)
    try:
        box.mount()
        box.install()
        box.boot()
        yield box
    finally:
        box.close()
        with contextlib.suppress(OSError):
            base.rmdir()


# -- the tests, in order -----------------------------------------------------------

NONCE = uuid.uuid4().hex[:12]
# Leaves a file behind only if it gets SIGTERM (from circusd), not SIGKILL.
GRACEFUL = (
    '/bin/sh -c \'trap "echo stopped > /var/lib/circusd-test/graceful; exit 0" '
    "TERM; while :; do sleep 0.2; done'"
)
BASE_CONFIG = f"""\
[circus]
endpoint = {CONTROL}
pubsub_endpoint = ipc:///run/circus/pubsub.sock

[watcher:sleeper]
cmd = sleep 1000
numprocesses = 2
copy_env = True

[env:sleeper]
CIRCUSD_TEST = {NONCE}

[watcher:graceful]
cmd = {GRACEFUL}

[env:graceful]
CIRCUSD_TEST = {NONCE}
"""


def marked_processes() -> list[psutil.Process]:
    """Processes of this test's watchers, found from the host by environment."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("CIRCUSD_TEST") == NONCE:
                found.append(process)
    return found


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def monotonic_usec(container: Container, prop: str) -> int:
    return int(container.show("circusd", prop))


def test_start_returns_only_once_circusctl_works(container, capsys):
    container.configure(BASE_CONFIG)
    container.systemctl("start", "circusd")
    # No retry and no sleep: the endpoint answers as soon as start returns.
    assert "sleeper" in container.circusctl("status", timeout=2.0)

    main_pid = container.show("circusd", "MainPID")
    started = monotonic_usec(container, "ExecMainStartTimestampMonotonic")
    ready = monotonic_usec(container, "ActiveEnterTimestampMonotonic")
    with capsys.disabled():
        elapsed = (ready - started) / 1000
        print(f"\ncircusd exec to READY=1 under systemd: {elapsed:.0f} ms")
    assert 0 < ready - started < 10_000_000

    status = wait_until(
        lambda: "3/3" in (s := container.show("circusd", "StatusText")) and s,
        10,
        "STATUS= with the counts",
    )
    assert status == "3/3 processes running in 2 watchers"
    environ = container.run(
        "sh", "-c", f"cat /proc/$(pgrep -P {main_pid} -x sleep | head -n 1)/environ"
    ).stdout
    assert f"CIRCUSD_TEST={NONCE}" in environ
    assert not re.search(r"(^|\0)(NOTIFY_SOCKET|WATCHDOG_|LISTEN_)", environ)


def test_installed_units_pass_systemd_analyze(container, capsys):
    units = [
        f"/etc/systemd/system/{name}" for name in ("circusd.service", "circusd.socket")
    ]
    result = container.run("systemd-analyze", "verify", *units, check=False)
    assert result.returncode == 0, result.stderr
    security = container.run("systemd-analyze", "security", "circusd.service").stdout
    level = re.search(
        r"Overall exposure level for circusd.service: (\d+\.\d)", security
    )
    assert level, security
    with capsys.disabled():
        print(f"\nsystemd-analyze security circusd.service: {level.group(1)}")
    assert float(level.group(1)) <= 6.0


def test_reload_applies_a_changed_config(container):
    main_pid = container.show("circusd", "MainPID")
    container.configure(BASE_CONFIG + "\n[watcher:added]\ncmd = sleep 1000\n")
    container.systemctl("reload", "circusd")
    wait_until(lambda: "added" in container.circusctl("list"), 10, "the added watcher")
    assert container.show("circusd", "MainPID") == main_pid
    wait_until(
        lambda: (
            container.show("circusd", "StatusText")
            == "4/4 processes running in 3 watchers"
        ),
        10,
        "STATUS= after the reload",
    )


def test_watchdog_restarts_a_wedged_daemon(container):
    dropin = "/etc/systemd/system/circusd.service.d/watchdog.conf"
    container.write(dropin, "[Service]\nWatchdogSec=2s\nRestartSec=0.5s\n")
    try:
        container.systemctl("daemon-reload")
        container.systemctl("restart", "circusd")
        wedged = container.show("circusd", "MainPID")
        time.sleep(2.5)  # longer than WatchdogSec: the pings keep it alive
        assert container.show("circusd", "MainPID") == wedged
        container.run("kill", "-STOP", wedged)
        wait_until(
            lambda: (
                container.show("circusd", "MainPID") not in ("0", wedged)
                and container.show("circusd", "ActiveState") == "active"
            ),
            20,
            "a new circusd after the watchdog fired",
        )
        assert "Watchdog timeout" in container.journal()
        assert "sleeper" in container.circusctl("status")
    finally:
        container.run("rm", "-f", dropin)
        container.systemctl("daemon-reload")


def test_stop_leaves_no_watcher_process(container):
    container.systemctl("restart", "circusd")
    # Two sleepers and the graceful shell; the shell's own short `sleep`
    # children carry the mark too and come and go, so: at least three.
    wait_until(lambda: len(marked_processes()) >= 3, 10, "three watcher processes")
    container.run("rm", "-f", "/var/lib/circusd-test/graceful")
    container.systemctl("stop", "circusd")
    assert marked_processes() == []
    # circusd stopped the watcher itself (SIGTERM, its trap ran); systemd's
    # final SIGKILL had nothing left to do.
    graceful = container.root / "var/lib/circusd-test/graceful"
    assert graceful.read_text() == "stopped\n"


def test_first_circusctl_starts_the_daemon_through_the_socket_unit(container):
    container.configure(BASE_CONFIG)
    container.systemctl("start", "circusd.socket")
    assert container.show("circusd", "ActiveState") == "inactive"
    assert "sleeper" in container.circusctl("status", timeout=20.0)
    assert container.show("circusd", "ActiveState") == "active"
    # Stopping circusd leaves systemd's socket in place, and the next
    # request starts circusd again.
    container.systemctl("stop", "circusd")
    assert container.show("circusd.socket", "ActiveState") == "active"
    assert "sleeper" in container.circusctl("status", timeout=20.0)
    container.systemctl("stop", "circusd", "circusd.socket")


FD_SERVER = "/opt/circusd/src/tests/systemd/fd_server.py"
WEB_CONFIG = f"""\
[circus]
endpoint = {CONTROL}
pubsub_endpoint = ipc:///run/circus/pubsub.sock

[socket:web]
host = 127.0.0.1
port = 8080

[watcher:app]
cmd = {PYTHON_IN_CONTAINER} {FD_SERVER} $(circus.sockets.web)
use_sockets = True
"""

ASK_WEB = (
    "import socket; "
    "s = socket.create_connection(('127.0.0.1', 8080), timeout=5); "
    "print(s.recv(64).decode().strip())"
)
LISTENING_INODE = (
    "print([l.split()[9] for l in open('/proc/net/tcp') "
    "if l.split()[1] == '0100007F:1F90' and l.split()[3] == '0A'])"
)


def test_activated_socket_keeps_its_inode_across_a_daemon_restart(container):
    container.configure(WEB_CONFIG)
    container.systemctl("start", "circusd-web.socket", "circusd")
    inode = container.run(PYTHON_IN_CONTAINER, "-c", LISTENING_INODE).stdout
    first = wait_until(
        lambda: container.run(PYTHON_IN_CONTAINER, "-c", ASK_WEB, check=False).stdout,
        10,
        "an answer from the app",
    )
    container.systemctl("restart", "circusd")
    second = wait_until(
        lambda: container.run(PYTHON_IN_CONTAINER, "-c", ASK_WEB, check=False).stdout,
        10,
        "an answer after the restart",
    )
    assert first != second  # a new app process ...
    after = container.run(PYTHON_IN_CONTAINER, "-c", LISTENING_INODE).stdout
    assert after == inode and inode.count("'") == 2  # ... on the same socket
    assert "adopted socket=web" in container.journal()
    container.systemctl("stop", "circusd", "circusd-web.socket")


def tightening_dropin() -> str:
    """The drop-in that docs/systemd.md offers for hosts whose watchers need
    less: the test keeps the promise that circusd still works with it."""
    text = (REPO / "docs" / "systemd.md").read_text()
    section = text.split("### Tightening it for your host", 1)[1]
    return section.split("```ini\n", 1)[1].split("```", 1)[0]


def test_the_tightened_unit_from_the_docs_still_runs_watchers_as_users(container):
    dropin = "/etc/systemd/system/circusd.service.d/tighten.conf"
    container.write(dropin, tightening_dropin())
    container.configure(
        BASE_CONFIG + "\n[watcher:unprivileged]\ncmd = sleep 1000\nuid = nobody\n"
    )
    try:
        container.systemctl("daemon-reload")
        container.systemctl("start", "circusd")
        status = container.circusctl("status")
        assert re.search(r"unprivileged\s+active", status), status
        pid = wait_until(
            lambda: re.findall(r"\d+", container.circusctl("list", "unprivileged")),
            10,
            "the unprivileged watcher's pid",
        )[0]
        owner = container.run("ps", "-o", "user=", "-p", pid).stdout.strip()
        assert owner == "nobody"
        security = container.run("systemd-analyze", "security", "circusd").stdout
        assert "Overall exposure level for circusd.service: 3.3" in security
    finally:
        container.systemctl("stop", "circusd")
        container.run("rm", "-f", dropin)
        container.systemctl("daemon-reload")
