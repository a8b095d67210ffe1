"""The decisions of the shipped plugins, on a fake clock, and the timers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from circusd.config.plugin_options import MemoryLimit
from circusd.plugins.base import Repeat, split_topic
from circusd.plugins.command_reloader import Stamp, executable
from circusd.plugins.resource_watcher import Breaches, Limits, Usage
from circusd.plugins.statsd import StatsdClient, live, metric_part
from circusd.plugins.watchdog import Heartbeats

LOG = logging.getLogger("test")


def process(cpu: float, mem: float, rss: str = "1.0M", pid: int = 1) -> dict:
    return {"pid": pid, "cpu": cpu, "mem": mem, "mem_info1": rss, "children": []}


# -- watchdog -------------------------------------------------------------------


def test_a_process_is_silent_only_after_the_timeout() -> None:
    beats = Heartbeats(timeout=3.0)
    beats.watch(10, "web", now=100.0)
    beats.watch(11, "web", now=100.0)
    assert beats.beat(11, now=102.5)
    assert beats.silent(now=103.0) == []
    assert beats.silent(now=103.5) == [(10, "web", 3.5)]
    assert beats.silent(now=105.0) == []  # 11 beat at 102.5; 10 is no longer watched
    assert beats.silent(now=105.6) == [(11, "web", pytest.approx(3.1))]


def test_a_heartbeat_from_an_unknown_pid_is_ignored() -> None:
    beats = Heartbeats(timeout=1.0)
    assert not beats.beat(99, now=1.0)
    beats.watch(5, "w", now=0.0)
    beats.forget(5)
    assert not beats.beat(5, now=1.0) and len(beats) == 0


# -- resource_watcher -------------------------------------------------------------


def test_usage_takes_the_highest_and_lowest() -> None:
    usage = Usage.of([process(10, 1.0, "2.0M"), process(80, 3.0, "512K")])
    assert usage == Usage(80, 10, 3.0, 1.0, 2 << 20, 512 << 10)
    assert Usage.of([]) is None


def test_limits_name_what_is_broken() -> None:
    limits = Limits(
        max_cpu=50,
        min_cpu=1,
        max_mem=MemoryLimit(100 << 20, percent=False),
        min_mem=MemoryLimit(0.5, percent=True),
        health_threshold=40,
    )
    usage = Usage.of([process(95, 0.2, "150M"), process(0.5, 0.1, "1M")])
    assert usage is not None
    assert limits.broken(usage) == [
        "over_cpu",
        "under_cpu",
        "over_memory",
        "under_memory",
        "over_health",
    ]
    calm = Usage.of([process(20, 1.0, "10M")])
    assert calm is not None and limits.broken(calm) == []


def test_zero_max_cpu_and_health_turn_those_limits_off() -> None:
    usage = Usage.of([process(400, 99)])
    assert usage is not None
    assert Limits(max_cpu=0, max_mem=None, health_threshold=0).broken(usage) == []


def test_act_only_after_more_than_max_count_checks_in_a_row() -> None:
    breaches = Breaches(max_count=2)
    assert breaches.record("w", ["over_cpu"]) == []
    assert breaches.record("w", ["over_cpu"]) == []
    assert breaches.record("w", []) == []  # a good check starts the count again
    assert breaches.record("w", ["over_cpu"]) == []
    assert breaches.record("w", ["over_cpu", "over_memory"]) == []
    assert breaches.record("w", ["over_cpu", "over_memory"]) == ["over_cpu"]
    breaches.keep_only(set())
    assert breaches.record("w", ["over_memory"]) == []


def test_entries_without_numbers_are_not_processes() -> None:
    infos = [process(1, 1), "No such process (stopped?)", {"cpu": "N/A", "mem": 1}]
    assert live(infos) == [process(1, 1)]


# -- statsd -----------------------------------------------------------------------


def test_metric_names_lose_statsd_separators() -> None:
    assert metric_part("plugin:statsd") == "plugin_statsd"
    assert metric_part("my app|x@y.z") == "my_app_x_y_z"
    assert metric_part("web-2") == "web-2"


def test_statsd_client_sends_counters_and_gauges_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client = StatsdClient("127.0.0.1", server.getsockname()[1], "circus.a", 1.0)
        client.increment("web.spawn")
        client.gauge("_stats.web.cpu_max", 12.5)
        client.gauge("_stats.web.watchers_num", 3)
        got = [server.recv(512) for _ in range(3)]
        client.close()
    assert got == [
        b"circus.a.web.spawn:1|c",
        b"circus.a._stats.web.cpu_max:12.5|g",
        b"circus.a._stats.web.watchers_num:3|g",
    ]


def test_topic_is_split_into_watcher_and_event() -> None:
    assert split_topic("watcher.plugin:statsd.spawn") == ("plugin:statsd", "spawn")


# -- command_reloader ----------------------------------------------------------------


def test_executable_is_the_first_word_of_cmd_not_the_whole_line(
    tmp_path: Path,
) -> None:
    program = tmp_path / "bin" / "app"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    path = str(program.parent)
    assert executable({"cmd": f"{program} --port 8000"}, "/bin") == str(program)
    assert executable({"cmd": "app --port 8000"}, path) == str(program)
    assert executable({"cmd": "app", "env": {"PATH": path}}, "/nowhere") == str(program)
    assert executable({"cmd": "x", "executable": str(program)}, "/bin") == str(program)
    assert executable({"cmd": "bin/app -v", "working_dir": str(tmp_path)}, "/") == str(
        program
    )
    venv = {"cmd": "app", "virtualenv": str(tmp_path)}
    assert executable(venv, "/nowhere") == str(program)
    assert executable({"cmd": "$(circus.env.APP) -v"}, path) is None


def test_stamp_changes_with_the_file_and_the_symlink(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("1")
    two.write_text("2")
    link = tmp_path / "current"
    link.symlink_to(one)
    first = Stamp.of(str(link))
    assert first is not None and first.path == str(one)
    assert Stamp.of(str(link)) == first
    link.unlink()
    link.symlink_to(two)
    assert Stamp.of(str(link)) != first
    replaced = tmp_path / "new"
    replaced.write_text("1")
    os.utime(replaced, ns=(first.mtime_ns, first.mtime_ns))
    os.replace(replaced, one)  # same path, size and mtime: a new file all the same
    again = Stamp.of(str(one))
    assert again is not None and again != first
    assert Stamp.of(str(tmp_path / "missing")) is None


# -- timers ---------------------------------------------------------------------------


def test_repeat_does_not_overlap_a_slow_coroutine() -> None:
    async def scenario() -> list[float]:
        starts: list[float] = []
        loop = asyncio.get_running_loop()

        async def slow() -> None:
            starts.append(loop.time())
            await asyncio.sleep(0.25)

        timer = Repeat(0.05, slow, LOG)
        await asyncio.sleep(0.6)
        timer.cancel()
        return starts

    starts = asyncio.run(scenario())
    assert 1 <= len(starts) <= 3
    assert all(b - a >= 0.24 for a, b in zip(starts, starts[1:], strict=False))


def test_repeat_keeps_going_after_a_failing_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise ValueError("nope")

    async def scenario() -> None:
        timer = Repeat(0.02, flaky, LOG)
        await asyncio.sleep(0.15)
        timer.cancel()

    asyncio.run(scenario())
    assert len(calls) >= 3
    assert "timer callback failed" in caplog.text
