"""Circus 0.19's own stats readers against circusd's stats stream: its
StatsClient library (run in Circus's venv) and circus-top (in tmux, read
with ``tmux capture-pane``)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.compat.conftest import PEER_BIN, wait_for_peer
from tests.conftest import Daemon, wait_for
from tests.terminal import terminal

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]

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

[socket:web]
host = 127.0.0.1
port = 0
"""

# Circus's StatsClient, as circus-top and circushttpd use it.
READER = """
import json, sys, time
from circus.stats.client import StatsClient
client = StatsClient(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
for watcher, subtopic, stat in client:
    print(json.dumps([watcher, subtopic, stat]), flush=True)
    if time.monotonic() > deadline:
        break
"""


@pytest.fixture
def daemon(start_daemon) -> Daemon:
    wait_for_peer()
    return start_daemon(CONFIG)


def test_circus_stats_client_reads_every_kind_of_message(daemon: Daemon) -> None:
    done = subprocess.run(
        [
            str(PEER_BIN / "python"),
            "-c",
            READER,
            f"ipc://{daemon.directory}/stats.sock",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in done.stdout.splitlines()]
    keys = {(watcher, subtopic is None) for watcher, subtopic, _ in seen}
    sleepers = daemon.pids("sleepers")

    assert {
        ("sleepers", False),
        ("sleepers", True),
        ("burner", False),
        ("circus", False),
        ("circus", True),
        ("sockets", False),
        ("sockets", True),
    } <= keys
    assert {int(s) for w, s, _ in seen if w == "sleepers" and s} == set(sleepers)
    burner = [stat for w, s, stat in seen if w == "burner" and s]
    assert max(stat["cpu"] for stat in burner) > 20  # a real, second sample
    names = {stat["name"] for w, s, stat in seen if w == "circus" and s}
    assert names == {"circusd", "circusd-stats"}


def test_circus_top_shows_circusd_watchers_processes_and_sockets(
    daemon: Daemon,
) -> None:
    sleepers = daemon.pids("sleepers")
    command = [
        str(PEER_BIN / "circus-top"),
        "--endpoint",
        f"ipc://{daemon.directory}/stats.sock",
    ]

    with terminal(command) as pane:
        first = wait_for(
            lambda: (
                (text := pane.screen())
                and all(str(pid) in text for pid in sleepers)
                and "127.0.0.1:" in text
                and text
            ),
            timeout=20,
            what="circus-top to show the sleepers and the socket",
        )
        time.sleep(2.2)
        second = pane.screen()

    assert first.startswith("Circus Top")
    for name in ("burner", "circus", "sleepers", "sockets"):
        assert re.search(rf"^{name}$", first, re.MULTILINE), first
    assert f"{daemon.process.pid} (circusd)" in first
    assert "(circusd-stats)" in first
    assert _age(first, sleepers[0]) < _age(second, sleepers[0])


def _age(text: str, pid: int) -> float:
    """The AGE column of ``pid``'s row."""
    line = next(line for line in text.splitlines() if line.split()[:1] == [str(pid)])
    return float(line.split()[-1])
