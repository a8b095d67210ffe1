"""Watchers under the real daemon: spawning, exits, stops, trees and backoff."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, ServiceUser, wait_for

PROGRAMS = REPO / "tests" / "programs"
PYTHON = (
    "/usr/bin/env python3"
    if not os.path.exists("/usr/bin/python3")
    else ("/usr/bin/python3")
)


def shared_dir(workdir: Path) -> Path:
    """A directory that children running as another user can write to."""
    path = workdir / "shared"
    path.mkdir(exist_ok=True)
    path.chmod(0o1777)
    return path


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marked(mark: str) -> list[int]:
    """Pids of processes whose environment holds SUPTEST_MARK=mark."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("SUPTEST_MARK") == mark:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_respawns_a_killed_process_at_once(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 2
        """)
    old = daemon.pids("w")
    os.kill(old[0], signal.SIGKILL)
    new = wait_for(
        lambda: (p := daemon.pids("w")) and len(p) == 2 and old[0] not in p and p,
        timeout=2,
        what="respawn",
    )
    assert old[1] in new
    assert daemon.ok("status", name="w")["status"] == "active"


def test_child_gets_exactly_the_sockets_its_command_names(
    start_daemon, workdir, test_user: ServiceUser
):
    sockets = "".join(
        f"[socket:a{i}]\nhost = 127.0.0.1\nport = 0\n\n" for i in range(1, 6)
    )
    names = " ".join(f"$(circus.sockets.a{i})" for i in range(1, 6))
    report = shared_dir(workdir) / "fds.json"
    daemon = start_daemon(
        f"""
        {sockets}
        [socket:b]
        host = 127.0.0.1
        port = 0

        [watcher:wa]
        cmd = {PYTHON} {PROGRAMS}/fdcheck.py {report} {names}
        uid = {test_user.name}
        stdout_stream.class = FileStream
        stdout_stream.filename = {workdir}/wa.log
        """.replace("\n        ", "\n"),
        args=("--log-output", f"{workdir}/daemon.log"),
    )
    result = json.loads(
        wait_for(lambda: report.exists() and report.read_text(), what="fd report")
    )
    assert set(result["listening"].values()) == {1}
    listed = {s["name"]: s for s in daemon.ok("listsockets")["sockets"]}
    assert len(listed) == 6
    fds = result["fds"]
    assert set(fds) == {"0", "1", "2", *result["listening"]}
    # fds 1 and 2 may be circusd's own stdout and stderr (as in Circus), but
    # never its log file, its endpoints or another watcher's output file.
    daemon_log = str(workdir / "daemon.log")
    assert not any(
        target.endswith(("ctl.sock", "pub.sock", "wa.log")) or target == daemon_log
        for target in fds.values()
    )
    assert (workdir / "daemon.log").stat().st_size > 0


def test_stop_children_kills_survivors_after_graceful_timeout(start_daemon, workdir):
    marker = workdir / "child.pid"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {PYTHON} {PROGRAMS}/stubborn_child.py {marker}
        stop_signal = INT
        stop_children = True
        graceful_timeout = 2
        """)
    child = int(
        wait_for(lambda: marker.exists() and marker.read_text(), what="child pid")
    )
    started = time.monotonic()
    daemon.ok("stop", name="w", waiting=True)
    assert time.monotonic() - started < 3.5
    assert not alive(child)


def test_stop_kills_grandchildren_that_left_the_process_group(start_daemon):
    mark = f"b10-{os.getpid()}-{time.monotonic_ns()}"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'setsid sh -c "exec sleep 1000" & (sleep 1000 &); exec sleep 1000'
        stop_children = True
        graceful_timeout = 2

        [env:w]
        SUPTEST_MARK = {mark}
        """)
    wait_for(lambda: len(marked(mark)) >= 3, what="three sleeps")
    started = time.monotonic()
    daemon.ok("stop", name="w", waiting=True)
    assert time.monotonic() - started < 3
    assert marked(mark) == []
    assert "survived" not in daemon.output()


def test_orphaned_grandchildren_are_reaped(start_daemon, workdir):
    done = workdir / "done"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {PYTHON} {PROGRAMS}/orphans.py 200 {done}
        """)
    wait_for(done.exists, what="200 double forks")

    def zombies() -> list[int]:
        found = []
        for child in psutil.Process(daemon.process.pid).children():
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return found

    time.sleep(0.5)  # the last grandchildren sleep 10 ms before exiting
    assert zombies() == []


def test_missing_command_backs_off_while_others_run(start_daemon, workdir):
    noexec = workdir / "noexec.sh"
    noexec.write_text("#!/bin/sh\nsleep 300\n")
    noexec.chmod(0o644)
    daemon = start_daemon(f"""
        [watcher:bad]
        cmd = {workdir}/does-not-exist
        max_retry = -1
        priority = 10

        [watcher:noexec]
        cmd = {noexec}
        max_retry = -1

        [watcher:good]
        cmd = sleep 300
        priority = 1
        """)
    daemon_process = psutil.Process(daemon.process.pid)
    cpu_before = sum(daemon_process.cpu_times()[:2])
    for moment in (2, 6):
        time.sleep(moment - 2 if moment > 2 else 0.5)
        started = time.monotonic()
        statuses = daemon.ok("status")
        assert time.monotonic() - started < 1
    assert statuses["statuses"]["good"] == "active"
    assert len(daemon.pids("good")) == 1
    bad = daemon.ok("status", name="bad")
    assert "No such file or directory" in bad["reason"]
    assert str(workdir / "does-not-exist") in bad["reason"]
    assert "Permission denied" in daemon.ok("status", name="noexec")["reason"]
    assert sum(daemon_process.cpu_times()[:2]) - cpu_before < 1.0
    errors = [
        line
        for line in daemon.output().splitlines()
        if "spawn failed" in line or "[ERROR]" in line
    ]
    assert len(errors) <= 20


def test_crash_loop_backs_off_and_ends_failed(start_daemon):
    daemon = start_daemon("""
        [watcher:crash]
        cmd = sh -c 'exit 3'

        [watcher:calm]
        cmd = sleep 300
        """)
    time.sleep(10)
    spawns = daemon.output().count("spawned watcher=crash")
    assert 2 <= spawns <= 6
    status = daemon.ok("status", name="crash")
    assert status["status"] == "failed"
    assert "exited with code 3" in status["reason"]
    daemon.ok("start", name="crash", waiting=True)
    assert daemon.ok("status", name="crash")["status"] != "stopped"


def test_requested_stops_are_never_crashes(start_daemon):
    daemon = start_daemon("""
        [watcher:calm]
        cmd = sleep 300
        max_retry = 1
        """)
    for _ in range(3):
        daemon.ok("stop", name="calm", waiting=True)
        daemon.ok("start", name="calm", waiting=True)
    daemon.ok("stop", name="calm", waiting=True)
    spawns = daemon.output().count("spawned watcher=calm")
    time.sleep(2)
    assert daemon.output().count("spawned watcher=calm") == spawns
    assert daemon.ok("status", name="calm")["status"] == "stopped"
    daemon.ok("start", name="calm", waiting=True)
    assert daemon.ok("status", name="calm")["status"] == "active"


def test_environment_values_pass_through_byte_for_byte(start_daemon, workdir):
    out = workdir / "env.txt"
    daemon = start_daemon(
        f"""
        [watcher:w]
        cmd = sh -c 'env > {out}.tmp; mv {out}.tmp {out}; exec sleep 300'
        copy_env = True

        [env:w]
        B = x1it%2BTV
        C = k=v,more
        D = héllo
        """,
        env={"SECRET": "foo$BAR%2Bx"},
    )
    lines = wait_for(
        lambda: out.exists() and out.read_text().splitlines(), what="env dump"
    )
    for expected in ("SECRET=foo$BAR%2Bx", "B=x1it%2BTV", "C=k=v,more", "D=héllo"):
        assert expected in lines
    assert not any(line.startswith(("NOTIFY_SOCKET=", "LISTEN_")) for line in lines)
    assert daemon.ok("status", name="w")["status"] == "active"


def test_undefined_variable_is_a_config_error(start_daemon, workdir):
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300

        [env:w]
        A = foo$UNDEFINED_VAR_X
        """,
        ready=False,
    )
    assert daemon.wait_exit(10) == 78
    assert "UNDEFINED_VAR_X" in daemon.output()
    assert "circus.ini:" in daemon.output()


def test_stream_class_that_cannot_be_loaded_is_a_config_error_naming_where(
    start_daemon,
):
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300
        stdout_stream.class = no_such_module_x.Stream
        """,
        ready=False,
    )
    assert daemon.wait_exit(10) == 78  # systemd does not retry a config error
    (line,) = [
        line
        for line in daemon.output().splitlines()
        if line.startswith("circusd: configuration error:")
    ]
    assert re.search(r"circus\.ini:\d+ \[watcher:w\] stdout_stream: cannot load", line)
    assert "no_such_module_x" in line


def test_uid_alone_takes_the_users_groups_and_home(
    start_daemon, workdir, test_user: ServiceUser
):
    out = shared_dir(workdir) / "id.txt"
    start_daemon(f"""
        [watcher:w]
        cmd = sh {PROGRAMS}/ids.sh {out}
        uid = {test_user.name}
        copy_env = True
        """)
    uid, gid, *rest = wait_for(
        lambda: out.exists() and out.read_text().split(), what="id output"
    )
    groups, (home, user, logname) = rest[:-3], rest[-3:]
    assert (int(uid), int(gid)) == (test_user.uid, test_user.gid)
    assert sorted(map(int, groups)) == sorted({test_user.gid, test_user.extra_gid})
    assert (home, user, logname) == (test_user.home, test_user.name, test_user.name)


def test_gid_zero_is_a_value_not_unset(start_daemon, workdir, test_user: ServiceUser):
    out = shared_dir(workdir) / "id.txt"
    start_daemon(f"""
        [watcher:w]
        cmd = sh {PROGRAMS}/ids.sh {out}
        uid = {test_user.name}
        gid = 0
        """)
    uid, gid, *rest = wait_for(
        lambda: out.exists() and out.read_text().split(), what="id output"
    )
    groups = rest[:-3]  # then HOME, USER and LOGNAME
    assert (int(uid), int(gid)) == (test_user.uid, 0)
    assert sorted(map(int, groups)) == sorted({0, test_user.extra_gid})


def test_usr1_and_usr2_do_not_kill_the_daemon(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        daemon.process.send_signal(signum)
    assert daemon.ok("status", name="w")["status"] == "active"
    assert daemon.process.poll() is None


def test_term_stops_every_child_and_exits_cleanly(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 3
        """)
    pids = daemon.pids("w")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert not any(alive(pid) for pid in pids)
    assert not (daemon.directory / "ctl.sock").exists()


def test_nothing_starts_while_circusd_stops(start_daemon):
    daemon = start_daemon("""
        [watcher:slow]
        cmd = sh -c 'trap "" TERM; sleep 300'
        graceful_timeout = 3
        priority = 1

        [watcher:later]
        cmd = sleep 300
        autostart = false
        """)
    daemon.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping all watchers" in daemon.output(), what="stopping")
    for command, props in (("start", {"name": "later"}), ("incr", {"name": "slow"})):
        reply = daemon.call(command, **props)
        assert reply["status"] == "error", reply
        assert "circusd is stopping" in reply["reason"]
    assert daemon.call("status", name="later")["status"] == "stopped"
    assert daemon.wait_exit() == 0
    assert "spawned watcher=later" not in daemon.output()


def test_hup_applies_only_the_difference(start_daemon):
    daemon = start_daemon("""
        [watcher:keep]
        cmd = sleep 300

        [watcher:scale]
        cmd = sleep 301

        [watcher:change]
        cmd = sleep 302

        [watcher:gone]
        cmd = sleep 303
        """)
    keep, scale, change = (daemon.pids(n) for n in ("keep", "scale", "change"))
    text = daemon.config.read_text()
    text = text.replace("cmd = sleep 301", "cmd = sleep 301\nnumprocesses = 2")
    text = text.replace("sleep 302", "sleep 304")
    text = text.replace(
        "[watcher:gone]\ncmd = sleep 303", "[watcher:new]\ncmd = sleep 305"
    )
    daemon.config.write_text(text)
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "new" in daemon.ok("list")["watchers"], what="reload")
    wait_for(lambda: len(daemon.pids("scale")) == 2, what="scale up")
    assert daemon.pids("keep") == keep
    assert scale[0] in daemon.pids("scale")
    assert daemon.pids("change") != change
    assert "gone" not in daemon.ok("list")["watchers"]


def test_a_failed_watcher_whose_command_is_fixed_starts_on_reload(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = /nonexistent/program
        max_retry = 1

        [watcher:held]
        cmd = /nonexistent/other
        autostart = false
        """)
    wait_for(lambda: daemon.call("status", name="w")["status"] == "failed")
    daemon.config.write_text(
        daemon.config.read_text()
        .replace("/nonexistent/program", "sleep 300")
        .replace("/nonexistent/other", "sleep 301")
    )
    daemon.ok("reloadconfig", waiting=True)
    assert daemon.call("status", name="w")["status"] == "active"
    assert len(daemon.pids("w")) == 1
    assert daemon.call("status", name="held")["status"] == "stopped"


def test_a_broken_config_on_reload_keeps_the_running_one(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    pids = daemon.pids("w")
    daemon.config.write_text(daemon.config.read_text() + "\nnumprocess = 3\n")
    reply = daemon.call("reloadconfig", waiting=True)
    assert reply["status"] == "error"
    assert "numprocess" in reply["reason"]
    assert daemon.pids("w") == pids


def test_second_daemon_on_the_same_endpoint_is_refused(start_daemon, workdir):
    first = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    second = subprocess.run(
        [
            *__import__("tests.conftest", fromlist=["CIRCUSD"]).CIRCUSD,
            str(first.config),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert second.returncode == 1
    assert "in use" in second.stderr
    assert first.ok("status", name="w")["status"] == "active"


@pytest.mark.parametrize("count", [1, 3])
def test_max_age_replaces_processes(start_daemon, count):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        numprocesses = {count}
        max_age = 1
        max_age_variance = 0
        """)
    first = set(daemon.pids("w"))
    wait_for(
        lambda: not first & set(daemon.pids("w")),
        timeout=5,
        what="all processes replaced",
    )
    assert len(daemon.pids("w")) == count
    assert "exited" not in daemon.output().split("max_age reached")[0][-200:]


def test_output_is_written_byte_for_byte(start_daemon, workdir: Path):
    log = workdir / "out.log"
    start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'printf "a\\303\\251b\\377\\n"; exec sleep 300'
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    wait_for(lambda: log.exists() and log.stat().st_size >= 6, what="output")
    assert log.read_bytes() == b"a\xc3\xa9b\xff\n"


def test_on_demand_watcher_starts_at_the_first_connection(start_daemon):
    import socket

    daemon = start_daemon("""
        [socket:web]
        host = 127.0.0.1
        port = 0

        [watcher:lazy]
        cmd = sleep 300 $(circus.sockets.web)
        on_demand = True
        """)
    assert daemon.pids("lazy") == []
    port = daemon.ok("listsockets")["sockets"][0]["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        wait_for(lambda: len(daemon.pids("lazy")) == 1, what="on-demand start")


def test_over_long_ipc_path_is_refused_at_once(start_daemon, workdir):
    long_path = f"{workdir}/{'a' * 110}.sock"
    started = time.monotonic()
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{long_path}

        [watcher:w]
        cmd = sleep 300
        """,
        ready=False,
    )
    assert daemon.wait_exit(5) == 78
    assert time.monotonic() - started < 2
    assert "107" in daemon.output() and long_path in daemon.output()
