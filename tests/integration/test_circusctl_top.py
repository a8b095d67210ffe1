"""``circusctl top`` against a real daemon: in a real terminal (tmux, read
with capture-pane), and as plain or JSON frames when not on a terminal."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.terminal import terminal

pytestmark = pytest.mark.timeout(90)

CIRCUSCTL = str(Path(sys.executable).with_name("circusctl"))
CONFIG = """
[circus]
endpoint = ipc://{dir}/ctl.sock
pubsub_endpoint = ipc://{dir}/pub.sock
stats_endpoint = ipc://{dir}/stats.sock

[watcher:sleepers]
cmd = sleep 600
numprocesses = 2

[watcher:burner]
cmd = python3 -c "while True: pass"
graceful_timeout = 1

[watcher:parked]
cmd = sleep 600
autostart = false
"""


def run_top(
    daemon: Daemon, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CIRCUSCTL, "--endpoint", daemon.endpoint, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def row(screen: str, first: str) -> list[str]:
    """The cells of the line that starts with ``first``."""
    for line in screen.splitlines():
        if line.split()[:1] == [first]:
            return line.split()
    raise AssertionError(f"no line for {first!r} in:\n{screen}")


def test_top_in_a_terminal_shows_watchers_pids_and_live_values(start_daemon):
    daemon = start_daemon(CONFIG)
    sleepers, (burner,) = daemon.pids("sleepers"), daemon.pids("burner")

    with terminal([CIRCUSCTL, "--endpoint", daemon.endpoint, "top"]) as pane:
        first = wait_for(
            lambda: (text := pane.screen()) and str(burner) in text and text,
            timeout=15,
            what="top to show the burner's pid",
        )
        later = wait_for(
            lambda: (
                (text := pane.screen())
                and float(row(text, str(burner))[1]) > 20
                and row(text, str(burner))[4] != row(first, str(burner))[4]
                and text
            ),
            timeout=15,
            what="the burner's CPU and age to change on screen",
        )
        pane.keys("p")
        by_pid = wait_for(
            lambda: (text := pane.screen()) and "sort: pid" in text and text,
            timeout=5,
            what="the p key to sort by pid",
        )
        pane.keys("q")
        status = wait_for(pane.exit_status, timeout=5, what="q to end top")
        after = pane.screen()

    assert first.startswith(f"circusctl top - ipc://{daemon.directory}/stats.sock")
    for name, state in (
        ("sleepers", "active"),
        ("burner", "active"),
        ("parked", "stopped"),
    ):
        assert row(later, name)[:2] == [name, state]
    assert all(str(pid) in later for pid in sleepers)
    assert row(later, "sleepers")[-2:] == ["2", "processes"]
    assert "circusd-stats" in later and "circusd" in row(later, str(daemon.process.pid))
    shown = [int(w) for w in re.findall(r"^\s+(\d+)\s", by_pid, re.MULTILINE)]
    assert [p for p in shown if p in sleepers] == sorted(sleepers)
    assert status == "0"
    assert "circusctl top" not in after  # the alternate screen is gone


def test_top_without_a_terminal_prints_plain_frames_sorted_as_asked(start_daemon):
    daemon = start_daemon(CONFIG)
    sleepers = sorted(daemon.pids("sleepers"))

    result = run_top(daemon, "top", "--iterations", "2", "--sort", "pid", "--reverse")

    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    frames = result.stdout.strip().split("\n\ncircusctl top")
    assert len(frames) == 2
    shown = [int(w) for w in re.findall(r"^\s+(\d+)\s", frames[-1], re.MULTILINE)]
    assert [p for p in shown if p in sleepers] == sleepers[::-1]
    assert "sort: pid (reversed)" in frames[-1]


def test_top_json_gives_one_object_per_second(start_daemon):
    daemon = start_daemon(CONFIG)
    (burner,) = daemon.pids("burner")

    result = run_top(daemon, "--json", "top", "--iterations", "4")

    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(frames) == 4
    last = frames[-1]["watchers"]
    assert last["parked"] == {"status": "stopped", "processes": []}
    assert [p["pid"] for p in last["burner"]["processes"]] == [burner]
    assert last["burner"]["processes"][0]["rss"] > 0
    assert 0.7 < frames[-1]["time"] - frames[-2]["time"] < 1.4


def test_top_says_what_to_set_when_the_daemon_publishes_no_statistics(start_daemon):
    daemon = start_daemon("[watcher:w]\ncmd = sleep 600")

    result = run_top(daemon, "top", "--iterations", "1")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "circusctl: error: the daemon publishes no statistics: set statsd = "
        "true (or stats_endpoint) in its [circus] section\n"
    )


def ipv6_loopback_port() -> int:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            return int(probe.getsockname()[1])
    except OSError:
        pytest.skip("no IPv6 loopback on this host")


def test_top_reads_a_stats_endpoint_on_ipv6_loopback(start_daemon):
    port = ipv6_loopback_port()
    daemon = start_daemon(
        CONFIG.replace(
            "stats_endpoint = ipc://{dir}/stats.sock",
            f"stats_endpoint = tcp://[::1]:{port}",
        )
    )

    result = run_top(daemon, "--json", "top", "--iterations", "3")

    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert len(last["watchers"]["sleepers"]["processes"]) == 2
