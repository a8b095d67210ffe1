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
from tests.systemd.nspawn import Container, missing_capability

pytestmark = pytest.mark.root
CONTROL = "ipc:///run/circus/ctl.sock"

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
    reason = missing_capability()
    if reason:
        return reason
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


class CheckoutContainer(Container):
    """The container, with the units and launchers of this checkout."""

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

    def boot_with_checkout(self) -> None:
        site = sysconfig.get_paths()["purelib"]
        self.boot(
            [
                f"--bind-ro={REPO}:/opt/circusd/src",
                f"--bind-ro={site}:/opt/circusd/site-packages",
            ]
        )

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

    def configure(self, text: str) -> None:
        self.write("/etc/circus/circusd.ini", text)


@pytest.fixture(scope="module")
def container() -> Iterator[CheckoutContainer]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="circusd-ct-", dir="/tmp"))
    box = CheckoutContainer(base)
    try:
        box.mount()
        box.install()
        box.boot_with_checkout()
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


def monotonic_usec(container: CheckoutContainer, prop: str) -> int:
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
