"""Each child runs with exactly the identity it was given (cases B01, B02,
B03), enters its working directory as that user, and gets the prctl
settings its watcher asks for."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServiceUser, call, wait_for
from tests.security.conftest import circusd_as_user, proc_status

pytestmark = pytest.mark.root


def shared(workdir: Path) -> Path:
    path = workdir / "shared"
    path.mkdir(exist_ok=True)
    path.chmod(0o1777)
    return path


def ids(status: dict[str, str], key: str) -> list[int]:
    return [int(part) for part in status[key].split()]


def test_uid_alone_gives_the_users_group_and_groups_only(
    start_daemon, workdir, owner: ServiceUser
):
    out = shared(workdir)
    root_file = workdir / "rootgroup.txt"
    root_file.write_text("secret\n")
    root_file.chmod(0o640)
    extra_file = workdir / "extragroup.txt"
    extra_file.write_text("ok\n")
    os.chown(extra_file, 0, owner.extra_gid)
    extra_file.chmod(0o640)
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'cat {root_file} > {out}/root 2>&1; cat {extra_file} > {out}/extra 2>&1; exec sleep 300'
        uid = {owner.name}

        [watcher:g]
        cmd = sleep 300
        gid = {owner.extra_group}
        """)  # noqa: E501
    status = proc_status(wait_for(lambda: daemon.pids("w"))[0])
    assert ids(status, "Uid") == [owner.uid] * 4
    assert ids(status, "Gid") == [owner.gid] * 4
    assert sorted(ids(status, "Groups")) == sorted({owner.gid, owner.extra_gid})
    wait_for(lambda: (out / "extra").read_text() if (out / "extra").exists() else "")
    wait_for(lambda: (out / "root").read_text() if (out / "root").exists() else "")
    assert "Permission denied" in (out / "root").read_text()
    assert (out / "extra").read_text() == "ok\n"

    gid_only = proc_status(wait_for(lambda: daemon.pids("g"))[0])
    assert ids(gid_only, "Uid") == [0] * 4
    assert ids(gid_only, "Gid") == [owner.extra_gid] * 4
    assert ids(gid_only, "Groups") == [owner.extra_gid]
    assert "g" in daemon.ok("list")["watchers"]


@pytest.mark.parametrize("copy_env", [True, False])
def test_user_switch_describes_the_user_in_the_environment(
    start_daemon, workdir, owner: ServiceUser, copy_env
):
    out = shared(workdir) / "env"
    start_daemon(
        f"""
        [watcher:w]
        cmd = sh -c 'env > {out}; exec sleep 300'
        uid = {owner.name}
        copy_env = {copy_env}

        [watcher:custom]
        cmd = sh -c 'env > {out}.custom; exec sleep 300'
        uid = {owner.name}

        [env:custom]
        HOME = /srv/custom
        """,
        env={"HOME": "/root", "USER": "root", "LOGNAME": "root"},
    )
    env = wait_for(lambda: out.exists() and out.read_text(), what="env dump")
    lines = env.splitlines()
    assert f"HOME={owner.home}" in lines
    assert f"USER={owner.name}" in lines and f"LOGNAME={owner.name}" in lines
    assert "HOME=/root" not in lines and "USER=root" not in lines
    custom = wait_for(lambda: Path(f"{out}.custom").exists()
                      and Path(f"{out}.custom").read_text())  # fmt: skip
    assert "HOME=/srv/custom" in custom.splitlines()


def test_working_dir_the_user_cannot_enter_is_refused(
    start_daemon, workdir, owner: ServiceUser
):
    private = workdir / "private"
    private.mkdir(mode=0o700)
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        uid = {owner.name}
        working_dir = {private}
        max_retry = 1

        [watcher:after]
        cmd = sleep 300
        priority = -1
        """)
    reason = wait_for(lambda: daemon.ok("status", name="w").get("reason"))
    assert str(private) in reason and "may not enter" in reason
    assert daemon.pids("w") == []
    assert len(daemon.pids("after")) == 1


def test_prctl_settings_reach_the_child(start_daemon, workdir, owner):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        uid = {owner.name}
        umask = 027
        rlimit_nofile = 512:1024
        no_new_privs = true
        pdeathsig = KILL
        capability_bounding_set = net_bind_service

        [watcher:plain]
        cmd = sleep 300
        """)
    pid = wait_for(lambda: daemon.pids("w"))[0]
    status = proc_status(pid)
    assert ids(status, "Uid") == [owner.uid] * 4
    assert ids(status, "Gid") == [owner.gid] * 4
    assert sorted(ids(status, "Groups")) == sorted({owner.gid, owner.extra_gid})
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapBnd"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE
    assert status["Umask"] == "0027"
    assert psutil.Process(pid).cwd() == str(workdir)
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(line.split()[3:5] == ["512", "1024"] for line in limits.splitlines()
               if line.startswith("Max open files"))  # fmt: skip
    plain = proc_status(daemon.pids("plain")[0])
    assert plain["NoNewPrivs"] == "0"
    assert int(plain["CapBnd"], 16) != 1 << 10


@pytest.mark.parametrize("as_user", [True, False], ids=["as-user", "as-root"])
def test_pdeathsig_kills_the_child_when_circusd_dies(start_daemon, owner, as_user):
    """Also for a root child, which gains capabilities at exec beyond
    circusd's effective set: the kernel would clear the signal if it gained
    them beyond circusd's permitted set."""
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        {f"uid = {owner.name}" if as_user else ""}
        pdeathsig = TERM
        """)
    pid = daemon.pids("w")[0]
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    wait_for(lambda: not psutil.pid_exists(pid)
             or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             timeout=5, what="the child to get its parent-death signal")  # fmt: skip


def test_daemon_that_is_not_root_refuses_another_uid(workdir: Path, owner: ServiceUser):
    """circusd running as an ordinary user (here: in a user namespace where
    it is uid `owner`) cannot switch to root: the watcher fails at once with
    the reason, the other watchers run, nothing runs as the wrong user."""
    out = workdir / "b01.uid"
    with circusd_as_user(
        workdir,
        owner,
        "b01",
        f"[watcher:w]\ncmd = sh -c 'id -u > {out}; exec sleep 300'\nuid = root\n\n"
        f"[watcher:mine]\ncmd = sleep 300\nuid = {owner.name}\n\n"
        "[watcher:plain]\ncmd = sleep 300\n",
    ) as endpoint:
        status = wait_for(
            lambda: (
                (s := call(endpoint, "status", name="w"))["status"] == "failed" and s
            ),
            timeout=2,
            what="the watcher to fail",
        )
        assert "not root" in status["reason"]
        assert call(endpoint, "status", name="plain")["status"] == "active"
        assert call(endpoint, "status", name="mine")["status"] == "active"
        assert not out.exists()
        assert call(endpoint, "list", name="w")["pids"] == []


def test_program_the_user_may_not_execute_is_refused_with_its_errno(
    start_daemon, workdir, owner: ServiceUser
):
    """exec happens as the watcher's user, so a program only root may run is
    reported as exec reports it, and nothing runs in its place."""
    program = workdir / "root-only"
    shutil.copy("/bin/sleep", program)
    program.chmod(0o700)
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {program} 300
        uid = {owner.name}
        max_retry = 1

        [watcher:after]
        cmd = sleep 300
        priority = -1
        """)
    reason = wait_for(lambda: daemon.ok("status", name="w").get("reason"))
    assert f"cannot execute {program}: Permission denied" in reason
    assert daemon.pids("w") == []
    assert len(daemon.pids("after")) == 1


def test_child_is_its_program_at_once_with_clean_signals_and_files(
    start_daemon, workdir, owner: ServiceUser
):
    """No set-up helper stands between circusd and the program: the pid
    circusd reports already runs it, with an explicit `executable` keeping
    argv[0], no signal ignored or blocked (not even those circusd's own
    parent ignored), and only 0, 1 and 2 open."""
    ignored = (signal.SIGHUP, signal.SIGALRM)  # circusd handles HUP itself
    previous = [signal.signal(signum, signal.SIG_IGN) for signum in ignored]
    try:  # circusd inherits the two ignored signals
        daemon = start_daemon(f"""
            [watcher:w]
            cmd = renamed-sleep 300
            executable = /bin/sleep
            uid = {owner.name}
            rlimit_nofile = 256
            """)
    finally:
        for signum, handler in zip(ignored, previous, strict=True):
            signal.signal(signum, handler)
    assert int(proc_status(daemon.process.pid)["SigIgn"], 16) & 1 << signal.SIGALRM - 1
    pid = daemon.pids("w")[0]
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"renamed-sleep\x00300\x00"
    assert os.readlink(f"/proc/{pid}/exe") in ("/bin/sleep", "/usr/bin/sleep")
    status = proc_status(pid)
    assert (status["SigIgn"], status["SigBlk"]) == ("0" * 16, "0" * 16)
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
