"""Watcher options and commands that change watchers, under the real daemon."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import zmq

from tests.conftest import REPO, wait_for

PROGRAMS = REPO / "tests" / "programs"


def events(daemon, topic: str = "watcher.") -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.connect(daemon.pubsub)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    time.sleep(0.2)  # a SUB socket misses what is published before it joins
    return sub


def test_graceful_reload_replaces_every_process(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 3
        """)
    old = set(daemon.pids("w"))
    reply = daemon.ok("reload", name="w", waiting=True)
    new = set(daemon.pids("w"))
    assert len(new) == 3 and not old & new
    assert set(reply["info"]["stopped"]) == old
    assert set(reply["info"]["started"]) == new


def test_send_hup_reload_signals_and_keeps_processes(start_daemon, workdir):
    out = workdir / "hups"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'trap "echo hup >> {out}" HUP; while :; do sleep 0.1; done'
        send_hup = True
        """)
    pids = daemon.pids("w")
    daemon.ok("reload", name="w", waiting=True)
    wait_for(lambda: out.exists() and out.read_text() == "hup\n", what="SIGHUP")
    assert daemon.pids("w") == pids


def test_add_start_and_rm(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    sub = events(daemon, "watcher.extra.")
    reply = daemon.ok(
        "add", name="extra", cmd="sleep", args=["301"], start=True, waiting=True
    )
    assert len(reply["started"]) == 1
    assert daemon.ok("status", name="extra")["status"] == "active"
    daemon.ok("rm", name="extra", waiting=True)
    assert "extra" not in daemon.ok("list")["watchers"]
    seen = []
    while sub.poll(1000):
        seen.append(sub.recv_multipart()[0].decode())
    sub.close()
    assert seen[0] == "watcher.extra.add"
    assert {"watcher.extra.spawn", "watcher.extra.reap", "watcher.extra.remove"} <= set(
        seen
    )


def test_set_cmd_restarts_with_the_new_command(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    before = daemon.pids("w")
    daemon.ok("set", name="w", options={"cmd": "sleep 302"}, waiting=True)
    after = daemon.pids("w")
    assert after != before
    cmdline = Path(f"/proc/{after[0]}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:2] == [b"sleep", b"302"]
    assert daemon.ok("get", name="w", keys=["cmd"])["options"]["cmd"] == "sleep 302"


def test_set_numprocesses_scales_without_restarting(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 2
        """)
    before = daemon.pids("w")
    daemon.ok("set", name="w", options={"numprocesses": 4}, waiting=True)
    wait_for(lambda: len(daemon.pids("w")) == 4, what="scale up")
    assert set(before) <= set(daemon.pids("w"))


def test_decr_stops_the_oldest_processes(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 3
        warmup_delay = 0.1
        """)
    first, *_, last = daemon.pids("w")
    assert daemon.ok("decr", name="w", nb=2, waiting=True)["numprocesses"] == 1
    assert daemon.pids("w") == [last]


def test_singleton_never_runs_more_than_one(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        singleton = True
        """)
    reply = daemon.ok("incr", name="w", waiting=True)
    assert reply == {**reply, "numprocesses": 1, "singleton": True}
    assert len(daemon.pids("w")) == 1


def test_no_respawn_and_no_autostart(start_daemon):
    daemon = start_daemon("""
        [watcher:once]
        cmd = sh -c 'sleep 0.2'
        respawn = False

        [watcher:later]
        cmd = sleep 300
        autostart = False
        """)
    assert daemon.ok("status", name="later")["status"] == "stopped"
    wait_for(
        lambda: daemon.ok("status", name="once")["status"] == "stopped",
        what="one-shot watcher to stop",
    )
    assert daemon.pids("once") == []
    daemon.ok("start", name="later", waiting=True)
    assert len(daemon.pids("later")) == 1


def test_priority_orders_start_and_warmup_spaces_it(start_daemon):
    daemon = start_daemon("""
        [circus]
        endpoint = ipc://{dir}/ctl.sock
        pubsub_endpoint = ipc://{dir}/pub.sock
        warmup_delay = 0.3

        [watcher:low]
        cmd = sleep 300
        priority = 1

        [watcher:high]
        cmd = sleep 300
        priority = 9
        """)
    wait_for(lambda: daemon.pids("low"), what="low priority watcher")
    log = daemon.output()
    assert log.index("spawned watcher=high") < log.index("spawned watcher=low")


def test_socket_on_stdin_and_close_child_stdout(start_daemon, workdir):
    daemon = start_daemon(f"""
        [socket:s]
        path = {workdir}/s.sock

        [watcher:w]
        cmd = python3 {PROGRAMS}/stdin_server.py
        stdin_socket = s
        close_child_stdout = True
        """)
    assert oct((workdir / "s.sock").stat().st_mode & 0o777) == "0o700"
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(workdir / "s.sock"))
        assert client.recv(2) == b"hi"
    assert "/dev/null" not in daemon.output()


def test_config_file_hooks_are_called(start_daemon, workdir):
    marker = workdir / "hooks.json"
    (workdir / "myhooks.py").write_text(
        "import json, os\n"
        "def record(watcher, arbiter, hook_name, **kw):\n"
        f"    with open({str(marker)!r}, 'a') as f:\n"
        "        f.write(json.dumps([hook_name, watcher.name]) + '\\n')\n"
        "    return True\n"
    )
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300
        hooks.before_start = myhooks.record
        hooks.after_spawn = myhooks.record
        """,
        env={"PYTHONPATH": str(workdir)},
    )
    daemon.ok("stop", name="w", waiting=True)
    calls = [json.loads(line) for line in marker.read_text().splitlines()]
    assert calls[:2] == [["before_start", "w"], ["after_spawn", "w"]]


def test_signal_reaches_only_the_named_process(start_daemon, workdir):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'trap "echo $$ >> {workdir}/usr1" USR1; while :; do sleep 0.1; done'
        numprocesses = 2
        """)
    target, other = daemon.pids("w")
    daemon.ok("signal", name="w", pid=target, signum="USR1")
    out = workdir / "usr1"
    wait_for(lambda: out.exists() and out.read_text(), what="USR1")
    time.sleep(0.3)
    assert out.read_text().split() == [str(target)]
    assert daemon.pids("w") == sorted([target, other])


def test_kill_one_process_gets_it_replaced(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 2
        """)
    victim, survivor = daemon.pids("w")
    daemon.ok("kill", name="w", pid=victim, signum="KILL", waiting=True)
    pids = wait_for(
        lambda: (p := daemon.pids("w")) and len(p) == 2 and p, what="replacement"
    )
    assert victim not in pids and survivor in pids


def test_reloadconfig_reports_a_broken_file_even_without_waiting(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300
        """)
    daemon.config.write_text(daemon.config.read_text() + "numprocesses = lots\n")
    reply = daemon.call("reloadconfig")
    assert reply["status"] == "error" and reply["errno"] == 3
    assert "numprocesses" in reply["reason"] and "circus.ini:" in reply["reason"]
    assert daemon.ok("status", name="w")["status"] == "active"


def test_start_waiting_reports_a_command_that_cannot_run(start_daemon, workdir):
    daemon = start_daemon(f"""
        [watcher:ghost]
        cmd = {workdir}/missing
        autostart = False
        max_retry = 1
        """)
    reply = daemon.call("start", name="ghost", waiting=True)
    assert reply["status"] == "error"
    assert "No such file or directory" in reply["reason"]
