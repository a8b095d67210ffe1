"""The plugins circusd ships, each under the real daemon, with real UDP
sockets on loopback and real processes that misbehave."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import Daemon, wait_for
from tests.integration.plugin_support import PROGRAMS, alive, ready

PYTHON = sys.executable


class Listener:
    """A UDP socket the test binds on loopback, and what arrived on it."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = int(self.socket.getsockname()[1])
        self.lines: list[str] = []

    def until(
        self, done: Callable[[list[str]], bool], timeout: float = 15.0
    ) -> list[str]:
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {self.lines[-20:]}")
            try:
                self.lines.append(self.socket.recv(4096).decode())
            except TimeoutError:
                continue
        return self.lines


@pytest.fixture
def udp() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.socket.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- statsd --------------------------------------------------------------------


def test_statsd_emitter_counts_every_event(start_daemon, udp: Listener):
    daemon = start_daemon(f"""
        [watcher:worker]
        cmd = sleep 300

        [plugin:statsd]
        use = circus.plugins.statsd.StatsdEmitter
        host = 127.0.0.1
        port = {udp.port}
        application_name = shop
        """)
    ready(daemon, "statsd")
    daemon.ok("incr", name="worker", waiting=True)
    daemon.ok("stop", name="worker", waiting=True)
    expected = {
        f"circus.shop.watcher.worker.{event}:1|c"
        for event in ("spawn", "kill", "reap", "stop")
    }
    lines = udp.until(lambda got: expected <= set(got))
    assert all(line.endswith("|c") for line in lines)
    # Two processes stopped: one kill and one reap each.
    udp.until(lambda got: got.count("circus.shop.watcher.worker.reap:1|c") == 2)


def test_full_stats_sends_gauges_per_watcher_but_not_for_plugins(
    start_daemon, udp: Listener
):
    daemon = start_daemon(f"""
        [watcher:worker]
        cmd = sleep 300
        numprocesses = 2

        [plugin:stats]
        use = circus.plugins.statsd.FullStats
        host = 127.0.0.1
        port = {udp.port}
        application_name = shop
        loop_rate = 0.2
        """)
    ready(daemon, "stats")
    prefix = "circus.shop.watcher._stats.worker."
    names = [
        "watchers_num",
        "cpu_max",
        "cpu_sum",
        "mem_pct_max",
        "mem_pct_sum",
        "mem_max",
        "mem_sum",
    ]
    lines = udp.until(lambda got: all(f"{prefix}{n}:" in "\n".join(got) for n in names))
    assert f"{prefix}watchers_num:2|g" in lines
    mem_sum = next(line for line in lines if line.startswith(f"{prefix}mem_sum:"))
    assert int(mem_sum.split(":")[1].removesuffix("|g")) > 100_000  # two sleeps' RSS
    assert not any("plugin" in line for line in lines)


# -- watchdog ------------------------------------------------------------------


def test_watchdog_kills_silent_processes_and_spares_those_that_beat(start_daemon):
    port = free_udp_port()
    daemon = start_daemon(f"""
        [watcher:beating]
        cmd = {PYTHON} {PROGRAMS}/heartbeat.py {port} 0.1

        [watcher:silent]
        cmd = sleep 300

        [watcher:ignored]
        cmd = sleep 300

        [plugin:dog]
        use = circus.plugins.watchdog.WatchDog
        port = {port}
        loop_rate = 0.25
        max_count = 2
        watchers_regex = ^(beating|silent)$
        """)
    dog = ready(daemon, "dog")
    beating, silent, ignored = (
        daemon.pids(n)[0] for n in ("beating", "silent", "ignored")
    )
    replaced = wait_for(
        lambda: daemon.pids("silent") != [silent] and daemon.pids("silent"),
        what="the silent process to be replaced",
    )
    assert not alive(silent)
    wait_for(lambda: daemon.pids("silent") != replaced, what="its silent successor")
    assert daemon.pids("beating") == [beating]
    assert daemon.pids("ignored") == [ignored]
    assert daemon.pids("plugin:dog") == [dog]  # plugins are never watched
    output = daemon.output()
    assert f"no heartbeat, killing watcher=silent pid={silent} silent=" in output
    assert "killing watcher=beating" not in output


def test_watchdog_that_cannot_bind_its_port_is_retried_then_failed(start_daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        daemon = start_daemon(f"""
            [plugin:dog]
            use = circus.plugins.watchdog.WatchDog
            port = {port}
            max_retry = 1
            """)
        reply = wait_for(
            lambda: (
                (r := daemon.call("status", name="plugin:dog"))["status"] == "failed"
                and r
            ),
            timeout=15,
        )
    assert reply["reason"].startswith(
        f"handle_init failed: OSError: cannot listen on udp 127.0.0.1:{port}: "
        "Address already in use"
    )


# -- resource_watcher ----------------------------------------------------------


def test_resource_watcher_restarts_a_watcher_over_its_cpu_limit(start_daemon):
    daemon = start_daemon(f"""
        [watcher:burner]
        cmd = {PYTHON} -c "while True: pass"

        [watcher:calm]
        cmd = sleep 300

        [plugin:cpu]
        use = circus.plugins.resource_watcher.ResourceWatcher
        watcher = burner
        max_cpu = 50
        loop_rate = 0.3
        max_count = 2

        [plugin:calm]
        use = circus.plugins.resource_watcher.ResourceWatcher
        watcher = calm
        max_cpu = 50
        loop_rate = 0.3
        max_count = 2
        """)
    ready(daemon, "cpu")
    ready(daemon, "calm")
    burner, calm = daemon.pids("burner")[0], daemon.pids("calm")[0]
    wait_for(
        lambda: daemon.pids("burner") not in ([burner], []),
        timeout=20,
        what="the burning watcher to be restarted",
    )
    assert not alive(burner)
    assert daemon.pids("calm") == [calm]
    assert (
        "limits broken, restarting watcher=burner limits=over_cpu checks=3"
        in daemon.output()
    )


def test_resource_watcher_reads_memory_limits_as_sizes(start_daemon):
    daemon = start_daemon(f"""
        [watcher:hog]
        cmd = {PYTHON} -c "import time; x = b'x' * (80 << 20); time.sleep(300)"

        [plugin:mem]
        use = circus.plugins.resource_watcher.ResourceWatcher
        watcher = hog
        max_cpu = 1000
        max_mem = 50M
        health_threshold = 0
        loop_rate = 0.3
        max_count = 1
        """)
    ready(daemon, "mem")
    hog = daemon.pids("hog")[0]
    wait_for(lambda: psutil.Process(hog).memory_info().rss > 80 << 20, what="RSS")
    wait_for(
        lambda: daemon.pids("hog") not in ([hog], []),
        timeout=20,
        what="the hog to be restarted",
    )
    assert "limits=over_memory " in daemon.output()


def test_resource_watcher_signals_an_offending_child_and_keeps_the_parent(
    start_daemon, workdir: Path
):
    record = workdir / "child.pid"
    daemon = start_daemon(f"""
        [watcher:parent]
        cmd = {PYTHON} {PROGRAMS}/burning_child.py {record}

        [plugin:children]
        use = circus.plugins.resource_watcher.ResourceWatcher
        watcher = parent
        max_cpu = 50
        process_children = true
        child_signal = SIGKILL
        loop_rate = 0.3
        max_count = 2
        """)
    ready(daemon, "children")
    parent = daemon.pids("parent")[0]
    child = int(wait_for(lambda: record.exists() and record.read_text()))
    wait_for(lambda: not alive(child), timeout=20, what="the child to be killed")
    assert daemon.pids("parent") == [parent]
    assert (
        f"signalling child watcher=parent pid={parent} child={child} "
        f"limits=over_cpu signal=9" in daemon.output()
    )
    assert "restarting watcher=parent" not in daemon.output()


# -- command_reloader ----------------------------------------------------------


def executable_script(path: Path, text: str = "exec sleep 300") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_command_reloader_restarts_when_the_program_changes(start_daemon, workdir):
    app = executable_script(workdir / "bin" / "app")
    release = executable_script(workdir / "releases" / "1" / "app")
    executable_script(workdir / "releases" / "2" / "app")
    current = workdir / "current"
    current.symlink_to(release.parent)
    daemon: Daemon = start_daemon(f"""
        [watcher:app]
        cmd = {app} --with arguments

        [watcher:linked]
        cmd = {current}/app -v

        [watcher:stopped]
        cmd = {workdir}/bin/app
        autostart = false

        [plugin:reloader]
        use = circus.plugins.command_reloader.CommandReloader
        loop_rate = 0.2
        """)
    ready(daemon, "reloader")
    first, linked = daemon.pids("app")[0], daemon.pids("linked")[0]
    time.sleep(0.6)  # several looks at unchanged files
    assert (daemon.pids("app"), daemon.pids("linked")) == ([first], [linked])

    executable_script(app, "exec sleep 301")  # a new version, same path
    wait_for(
        lambda: daemon.pids("app") not in ([first], []), what="app to be restarted"
    )

    (workdir / "next").symlink_to(workdir / "releases" / "2")
    os.replace(workdir / "next", current)  # switch releases
    wait_for(
        lambda: daemon.pids("linked") not in ([linked], []),
        what="linked to be restarted",
    )
    output = daemon.output()
    assert f"executable changed, restarting watcher=app path={app}" in output
    assert f"path={workdir}/releases/2/app" in output
    assert daemon.call("status", name="stopped")["status"] == "stopped"
