"""sd_notify without systemd: the test plays the service manager (case B26).

The notification socket has SO_PASSCRED set, so the kernel attaches the
sender's pid to every datagram, as it does for systemd under
NotifyAccess=main.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from tests.conftest import call, wait_for

SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def env_file(path: Path) -> dict[str, str]:
    text = wait_for(lambda: path.exists() and path.read_text(), what=str(path))
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def test_ready_comes_once_from_the_main_pid_when_the_endpoint_answers(launch, workdir):
    run = launch("""
        [watcher:b26]
        cmd = sh -c 'env > {dir}/b26.env; exec sleep 300'
        copy_env = True

        [watcher:slow]
        cmd = sh -c 'trap "sleep 1; exit 0" TERM; while :; do sleep 0.1; done'
        """)
    ready = run.manager.wait_for("READY=1")
    started = time.monotonic()
    reply = run.call("status", timeout=2.0)  # the first try, right away
    assert reply["status"] == "ok", reply
    assert time.monotonic() - started < 1.0
    assert ready.pid == run.process.pid

    child_env = env_file(workdir / "b26.env")
    assert not [k for k in child_env if k.startswith(SYSTEMD_VARIABLES)]

    run.process.send_signal(signal.SIGTERM)
    run.manager.wait_for("STOPPING=1")
    assert run.process.poll() is None  # sent when the stop began, not at exit
    assert run.process.wait(10) == 0
    messages = run.manager.messages + run.manager.collect(0.2)
    assert {m.pid for m in messages} == {run.process.pid}
    assert sum("READY=1" in m for m in messages) == 1


def test_status_follows_process_counts_and_is_not_sent_on_a_timer(launch):
    run = launch("""
        [watcher:web]
        cmd = sleep 300
        numprocesses = 3

        [watcher:idle]
        cmd = sleep 300
        autostart = False
        """)
    run.manager.wait_for("READY=1")
    run.manager.wait_for("STATUS=3/3 processes running in 2 watchers")
    assert run.manager.collect(1.5) == []  # nothing changed, nothing sent

    run.call("incr", name="web", nb=2)
    run.manager.wait_for("STATUS=5/5 processes running in 2 watchers")
    pid = run.call("list", name="web")["pids"][0]
    os.kill(pid, signal.SIGKILL)
    # The exit and the respawn come in turn; the count is back at 5 after.
    run.manager.wait_for("STATUS=5/5 processes running in 2 watchers")
    run.call("stop", name="web", waiting=True)
    run.manager.wait_for("STATUS=0/0 processes running in 2 watchers")


def test_reload_sends_reloading_with_the_monotonic_time_then_ready(launch, workdir):
    run = launch("""
        [watcher:one]
        cmd = sleep 300
        """)
    run.manager.wait_for("READY=1")
    config = workdir / "circus.ini"
    config.write_text(config.read_text() + "\n[watcher:two]\ncmd = sleep 300\n")

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    run.process.send_signal(signal.SIGHUP)
    reloading = run.manager.wait_for("RELOADING=1")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after
    assert run.manager.wait_for("READY=1").received >= reloading.received
    assert "two" in run.call("list")["watchers"]
    run.manager.wait_for("STATUS=2/2 processes running in 2 watchers")


def test_rejected_reload_still_ends_with_ready_and_says_why(launch, workdir):
    run = launch("""
        [watcher:one]
        cmd = sleep 300
        """)
    run.manager.wait_for("READY=1")
    (workdir / "circus.ini").write_text("[watcher:broken]\nnumprocesses = many\n")
    run.process.send_signal(signal.SIGHUP)
    run.manager.wait_for("RELOADING=1")
    ready = run.manager.wait_for("READY=1")
    assert ready.fields["STATUS"].startswith("reload rejected")
    assert run.call("list")["watchers"] == ["one"]


STALL_HOOK = """
import time


def stall(**info):
    time.sleep(2.0)
    return True
"""


def test_watchdog_pings_at_half_the_interval_from_the_event_loop(launch, workdir):
    (workdir / "stall.py").write_text(STALL_HOOK)
    run = launch(
        """
        [watcher:lazy]
        cmd = sleep 300
        autostart = False
        hooks.before_start = stall.stall
        """,
        env={"WATCHDOG_USEC": "400000"},
    )
    run.manager.wait_for("READY=1")
    pings = [m for m in run.manager.collect(1.2) if "WATCHDOG=1" in m]
    assert 4 <= len(pings) <= 8, len(pings)  # every 0.2 s
    assert {m.pid for m in pings} == {run.process.pid}

    # A hook that holds the event loop for 2 s: the pings stop with it, as
    # they must for systemd to notice a wedged daemon.
    threading.Thread(
        target=call,
        args=(run.endpoint, "start", 5.0),
        kwargs={"name": "lazy"},
        daemon=True,
    ).start()
    run.manager.collect(0.4)
    assert [m for m in run.manager.collect(1.0) if "WATCHDOG=1" in m] == []
    run.manager.wait_for("WATCHDOG=1", timeout=2.0)


def test_watchdog_meant_for_another_pid_is_ignored_and_not_inherited(launch, workdir):
    run = launch(
        """
        [watcher:w]
        cmd = sh -c 'env > {dir}/w.env; exec sleep 300'
        copy_env = True
        """,
        env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    run.manager.wait_for("READY=1")
    assert not [m for m in run.manager.collect(0.6) if "WATCHDOG=1" in m]
    child_env = env_file(workdir / "w.env")
    assert not [k for k in child_env if k.startswith(SYSTEMD_VARIABLES)]
