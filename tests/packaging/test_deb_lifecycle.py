"""The Debian package under a real systemd, from install to purge.

A container boots over a copy-on-write overlay of this machine's root
(tests/systemd/nspawn.py). In it, Debian's runtime packages are purged first,
so that apt must install them again, from the host's apt cache, as the
package's dependencies: nothing comes from pip. The tests then run in order
against that one container: install, circusctl as root, as a member of the
group circus and as another user, a watcher dropped into
/etc/circus/conf.d, circusd.socket enabled as docs/install.md says,
reinstall, upgrade, remove and purge.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.packaging.conftest import DEBIAN_PATH, Build
from tests.systemd.nspawn import Container, missing_capability

pytestmark = pytest.mark.root

# bookworm's versions: the package must run on these.
RUNTIME = {
    "python3-zmq": ("zmq", "24.0.1"),
    "python3-psutil": ("psutil", "5.9.4"),
    "python3-paramiko": ("paramiko", "2.12.0"),
    "python3-click": ("click", "8.1.3"),
    "python3-prctl": ("prctl", None),  # the module has no version
    "python3-sdnotify": ("sdnotify", None),
}
ARCHIVES = Path("/var/cache/apt/archives")
APT_TIMEOUT = 180
NONCE = uuid.uuid4().hex[:8]
MEMBER = f"cm{NONCE}"  # in the group circus
OTHER = f"co{NONCE}"  # in no group of circusd's
CONTROL = "/run/circus/ctl.sock"
EXTRA_INI = f"""\
[circus]
endpoint = ipc:///run/circus/extra/ctl.sock
pubsub_endpoint = ipc:///run/circus/extra/pubsub.sock

[watcher:extra]
cmd = sleep 1000

[env:extra]
CIRCUSD_TEST = {NONCE}
"""
# Leaves a file behind only if it gets SIGTERM (from circusd), not SIGKILL.
WEB_INI = f"""\
[watcher:web]
cmd = sleep 1000
numprocesses = 2

[env:web]
CIRCUSD_TEST = {NONCE}

[watcher:graceful]
cmd = /bin/sh -c 'trap "echo stopped > /var/lib/circusd-test/graceful; exit 0" \
TERM; while :; do sleep 0.2; done'

[env:graceful]
CIRCUSD_TEST = {NONCE}
"""
# Not the package's business: caches, logs, dpkg's and apt's own state, and
# what the boot and the test's own setup wrote.
VOLATILE = (
    "var/log/",
    "var/cache/",
    "var/lib/apt/",
    "var/lib/dpkg/status",
    "var/lib/dpkg/lock",
    "var/lib/dpkg/triggers/",
    "var/lib/dpkg/updates/",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/catalog/",
    "var/lib/systemd/timers/",
    "var/lib/man-db/",
    "var/lib/PackageKit/",
    "var/lib/circusd-test/",
    "var/tmp/",
    "tmp/",
    "root/",
    "etc/ld.so.cache",
)


# -- helpers -------------------------------------------------------------------------


def runtime_debs() -> list[Path]:
    """The runtime packages' .debs in the host's apt cache, downloaded there
    (from Debian, with apt) if they are missing."""

    def found() -> list[Path]:
        return [
            deb for name in RUNTIME for deb in sorted(ARCHIVES.glob(f"{name}_*.deb"))
        ]

    if len({deb.name.split("_")[0] for deb in found()}) < len(RUNTIME):
        subprocess.run(
            ["apt-get", "install", "--reinstall", "--download-only", "-y", "-q",
             *RUNTIME],
            capture_output=True,
            timeout=APT_TIMEOUT,
            env={"PATH": DEBIAN_PATH, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
    debs = found()
    names = {deb.name.split("_")[0] for deb in debs}
    assert names == set(RUNTIME), f"no .deb in {ARCHIVES} for {set(RUNTIME) - names}"
    return debs


def marked_processes() -> list[psutil.Process]:
    """This test's watcher processes, found from the host by environment."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("CIRCUSD_TEST") == NONCE:
                found.append(process)
    return found


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def changed_paths(upper: Path) -> set[str]:
    """Every path the container has added or changed, relative to /."""
    paths = set()
    for directory, dirs, files in os.walk(upper):
        for name in dirs + files:
            paths.add(os.path.relpath(os.path.join(directory, name), upper))
    return paths


class PackageBox(Container):
    """The container, with the built packages in /root/debs, and what the
    tests remember from one step to the next."""

    def __init__(self, base: Path, builds: tuple[Build, Build]) -> None:
        super().__init__(base)
        self.builds = builds
        self.before: set[str] = set()  # changed paths before the install
        self.accounts: dict[str, bytes] = {}  # /etc/passwd & co. before it
        self.debs = {build.version: f"/root/debs/{build.deb.name}" for build in builds}

    def apt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """apt-get in the container, which has no network: every .deb comes
        from the host's cache or /root/debs (and so no Recommends, such as
        paramiko's python3-invoke). Not --no-download: apt 2.6 then refuses
        a .deb given by its path."""
        return self.run(
            "apt-get", "-y", "-q", "--no-install-recommends",
            "-o", "Dpkg::Use-Pty=0", *args,
            timeout=APT_TIMEOUT,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip

    def circusctl(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """circusctl as ``user`` with no login environment (as under sudo or
        cron): it must find the packaged daemon's socket by itself."""
        return self.run("runuser", "-u", user, "--", "circusctl", *args, check=False)

    def pids(self, watcher: str) -> set[str]:
        listed = self.circusctl("root", "list", watcher)
        assert listed.returncode == 0, listed.stderr
        return set(re.findall(r"\d+", listed.stdout))

    def read(self, path: str) -> bytes:
        return (self.root / path.lstrip("/")).read_bytes()

    def prepare(self, debs: list[Path]) -> None:
        """Purge the runtime packages (apt must bring them back from the
        cache), add the test users, and note what is there before the
        install."""
        assert all(deb.parent == ARCHIVES for deb in debs)
        self.run("dpkg", "--purge", *RUNTIME)
        for user in (MEMBER, OTHER):
            self.run("useradd", "--create-home", "--shell", "/bin/sh", user)
        self.before = changed_paths(self.upper)
        self.accounts = {path: self.read(path) for path in ACCOUNT_FILES}


ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


@pytest.fixture(scope="module")
def box(builds: tuple[Build, Build]) -> Iterator[PackageBox]:
    reason = missing_capability()
    if reason:
        pytest.skip(reason)
    debs = runtime_debs()
    base = Path(tempfile.mkdtemp(prefix="circusd-deb-", dir="/tmp"))
    container = PackageBox(base, builds)
    try:
        container.mount()
        folder = container.root / "root/debs"
        folder.mkdir(parents=True)
        for build in builds:
            shutil.copy(build.deb, folder)
        # Packages may start services in the container (never on the host),
        # and man-db need not rebuild its index after each step.
        for path in ("usr/sbin/policy-rc.d", "var/lib/man-db/auto-update"):
            (container.root / path).unlink(missing_ok=True)
        (container.root / "var/lib/circusd-test").mkdir(parents=True)
        container.boot()
        container.prepare(debs)
        yield container
    finally:
        container.close()
        with contextlib.suppress(OSError):
            base.rmdir()


# -- the tests, in order ---------------------------------------------------------------

IMPORTS = "; ".join(
    f"import {module}; print('{name}', {module}.__file__, "
    f"getattr({module}, '__version__', None))"
    for name, (module, _) in RUNTIME.items()
)


def test_install_brings_debian_runtime_packages_and_starts_the_service(box, capsys):
    started = time.monotonic()
    result = box.apt("install", box.debs[box.builds[0].version])
    seconds = time.monotonic() - started
    for name in RUNTIME:
        assert f"Setting up {name} " in result.stdout, result.stdout
    assert box.show("circusd", "ActiveState") == "active"
    assert box.systemctl("is-enabled", "circusd").strip() == "enabled"
    # Debian's modules, at bookworm's versions, and nothing from pip.
    imported = box.run("python3", "-I", "-c", IMPORTS).stdout.splitlines()
    for line in imported:
        name, path, version = line.split()
        assert path.startswith("/usr/lib/python3/dist-packages/"), line
        assert RUNTIME[name][1] in (None, version), line
    assert len(imported) == len(RUNTIME)
    # A fresh install says nothing worth a warning.
    warnings = box.run(
        "journalctl", "--no-pager", "-o", "cat", "-p", "warning", "-u", "circusd"
    ).stdout
    assert warnings.strip() in ("", "-- No entries --"), warnings
    with capsys.disabled():
        print(f"\napt-get install circusd and 6 runtime packages: {seconds:.1f} s")


def test_control_socket_belongs_to_root_and_the_group_circus(box):
    group = box.run("getent", "group", "circus").stdout.split(":")
    assert int(group[2]) < 1000  # a system group
    stat = box.run("stat", "-c", "%U %G %a", CONTROL).stdout.split()
    assert stat == ["root", "circus", "660"]
    # circusd.socket, for those who enable it, makes the same file.
    assert box.show("circusd.socket", "SocketGroup") == "circus"
    assert box.show("circusd.socket", "SocketMode") == "0660"


def test_circusctl_status_as_root_as_group_member_and_refused_for_others(box):
    box.run("adduser", "--quiet", MEMBER, "circus")
    root = box.circusctl("root", "status")
    assert root.returncode == 0, root.stderr
    member = box.circusctl(MEMBER, "status")
    assert member.returncode == 0, member.stderr
    # The group may read, not operate (readonly_group in circusd.ini).
    stop = box.circusctl(MEMBER, "stop")
    assert stop.returncode == 3 and "permission denied" in stop.stderr, stop.stderr
    other = box.circusctl(OTHER, "status")
    assert other.returncode == 1, other.stdout
    assert (
        f"permission denied on {CONTROL} (owner root, group circus, mode 0660); "
        "this user may not connect to it"
    ) in other.stderr, other.stderr


COMPLETE = (
    "source /usr/share/bash-completion/completions/circusctl; "
    "COMP_WORDS=(circusctl {words}); COMP_CWORD={index}; "
    "_circusctl_completion circusctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""
)


def completions(box: PackageBox, *words: str) -> list[str]:
    script = COMPLETE.format(words=" ".join(words), index=len(words))
    return box.run("bash", "-c", script).stdout.split()


def test_man_pages_and_bash_completion_are_installed(box):
    for page, section in (("circusd", "8"), ("circusctl", "1")):
        found = box.run("man", "-w", section, page).stdout.strip()
        assert found == f"/usr/share/man/man{section}/{page}.{section}.gz"
    assert "stop" in box.run("man", "-P", "cat", "circusctl").stdout
    assert completions(box, "sta") == ["start", "stats", "status"]
    assert "--endpoint" in completions(box, "--end")


def test_watcher_dropped_into_conf_d_is_started_by_reload(box):
    main_pid = box.show("circusd", "MainPID")
    box.write("/etc/circus/conf.d/web.ini", WEB_INI)
    box.systemctl("reload", "circusd")
    wait_until(lambda: len(box.pids("web")) == 2, 10, "the two web processes")
    status = box.circusctl("root", "status").stdout
    assert re.search(r"web\s+active\s+2", status), status
    assert box.show("circusd", "MainPID") == main_pid


def test_socket_unit_enabled_as_install_md_says_is_started_by_a_group_member(box):
    """docs/install.md: stop circusd, enable circusd.socket, and the first
    circusctl (here a member of the group circus, through the package's
    drop-in) starts circusd on the socket systemd holds."""
    box.systemctl("stop", "circusd")
    box.systemctl("enable", "--now", "circusd.socket")
    assert box.show("circusd", "ActiveState") == "inactive"
    stat = box.run("stat", "-c", "%U %G %a", CONTROL).stdout.split()
    assert stat == ["root", "circus", "660"]
    member = box.circusctl(MEMBER, "status")
    assert member.returncode == 0, member.stderr
    assert box.show("circusd", "ActiveState") == "active"
    wait_until(lambda: len(box.pids("web")) == 2, 10, "web on the activated daemon")
    adopted = box.run(
        "journalctl", "--no-pager", "-o", "cat", "-u", "circusd", "-n", "20"
    ).stdout
    assert "systemd passed fds=3:control" in adopted, adopted
    other = box.circusctl(OTHER, "status")
    assert f"permission denied on {CONTROL}" in other.stderr, other.stderr


def socket_identity(box: PackageBox) -> tuple[str, str]:
    """The held control socket's inode and when its unit last started."""
    inode = box.run("stat", "-c", "%i", CONTROL).stdout.strip()
    return inode, box.show("circusd.socket", "ActiveEnterTimestampMonotonic")


def start_instance(box: PackageBox) -> str:
    box.write("/etc/circus/extra.ini", EXTRA_INI)
    box.systemctl("enable", "--now", "circusd@extra")
    return box.show("circusd@extra", "MainPID")


def test_reinstall_keeps_the_edited_config(box):
    config = box.read("/etc/circus/circusd.ini") + b"# edited by the operator\n"
    box.write("/etc/circus/circusd.ini", config.decode())
    result = box.apt("install", "--reinstall", box.debs[box.builds[0].version])
    assert "restarting circusd.service" in result.stdout
    assert box.read("/etc/circus/circusd.ini") == config
    assert box.show("circusd", "ActiveState") == "active"
    wait_until(lambda: len(box.pids("web")) == 2, 10, "web after the reinstall")


def test_upgrade_keeps_the_config_and_restarts_every_watcher_gracefully(box):
    instance_pid = start_instance(box)
    config = box.read("/etc/circus/circusd.ini")
    web = box.pids("web")
    main_pid = box.show("circusd", "MainPID")
    graceful = box.root / "var/lib/circusd-test/graceful"
    graceful.unlink(missing_ok=True)
    held = socket_identity(box)

    new = box.builds[1].version
    result = box.apt("install", box.debs[new])
    assert (
        "circusd: restarting circusd.service to run the version just installed: "
        "every watcher is stopped and started again (README.Debian)"
    ) in result.stdout
    assert (
        "circusd: restarting circusd@extra.service to run the version just installed"
    ) in result.stdout
    assert box.run("dpkg-query", "-W", "-f", "${Version}", "circusd").stdout == new
    assert box.read("/etc/circus/circusd.ini") == config
    assert box.read("/etc/circus/conf.d/web.ini") == WEB_INI.encode()
    # A new daemon; every watcher was stopped by circusd (SIGTERM, its trap
    # ran) and started again.
    assert box.show("circusd", "MainPID") not in ("0", main_pid)
    assert graceful.read_text() == "stopped\n"
    after = wait_until(lambda: len(p := box.pids("web")) == 2 and p, 10, "web")
    assert not after & web
    assert box.show("circusd@extra", "MainPID") not in ("0", instance_pid)
    # circusd.socket was neither stopped nor restarted: the same socket
    # waited for the new daemon.
    assert box.show("circusd.socket", "ActiveState") == "active"
    assert socket_identity(box) == held


def test_remove_stops_the_daemon_the_instances_and_every_watcher(box):
    assert len(marked_processes()) >= 4  # 2 web, graceful, extra
    box.apt("remove", "circusd")
    assert marked_processes() == []
    for unit in ("circusd", "circusd@extra", "circusd.socket"):
        assert box.show(unit, "ActiveState") == "inactive"
    assert box.run("test", "-e", "/run/circus", check=False).returncode == 1
    assert box.read("/etc/circus/circusd.ini")  # remove keeps the config


def test_purge_leaves_only_the_operators_own_files(box):
    result = box.apt("purge", "circusd")
    assert "not empty so not removed" in result.stdout + result.stderr
    assert box.run("getent", "group", "circus", check=False).returncode == 2
    for path, content in box.accounts.items():
        assert box.read(path) == content, f"{path} differs from before the install"
    # New in the container (not on the host) and still there; the upper
    # layer also holds whiteouts, which mark files deleted in the container.
    left = {
        path
        for path in changed_paths(box.upper) - box.before
        if os.path.lexists(box.root / path)
        and not os.path.lexists("/" + path)
        and not path.startswith(VOLATILE)
    }
    # The files the test wrote as the operator, and the folders holding
    # them: dpkg keeps what is not the package's. No link, unit, conffile,
    # cache or runtime file of the package is left.
    assert left == {
        "etc/circus",
        "etc/circus/extra.ini",
        "etc/circus/conf.d",
        "etc/circus/conf.d/web.ini",
    }
