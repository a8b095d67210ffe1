"""Ending a command that reads a stream over SSH (listen, top) while data
still flows: ZeroMQ's sockets close first, then the tunnels, then the SSH
connection, and nothing of that is reported as a broken tunnel (the
tunnel's side of it: tests/ssh/test_bridge.py)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Daemon
from tests.ssh.conftest import Client

pytestmark = pytest.mark.timeout(120)

BUSY = """
[circus]
endpoint = ipc://{dir}/ctl.sock
pubsub_endpoint = ipc://{dir}/pub.sock
stats_endpoint = ipc://{dir}/stats.sock

[watcher:sleeper]
cmd = sleep 600
numprocesses = 20
"""
TRIALS = 4  # end-to-end runs per command: the race they look for is short


@pytest.fixture
def busy_daemon(start_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """A daemon that publishes events without pause (incr, decr, ...)."""
    daemon = start_daemon(BUSY)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            daemon.call("incr", name="sleeper")
            daemon.call("decr", name="sleeper")

    thread = threading.Thread(target=churn, name="churn", daemon=True)
    thread.start()
    yield daemon
    stop.set()
    thread.join(20)


@pytest.mark.parametrize(
    "command",
    [["listen"], ["--json", "top"]],
    ids=["listen", "top"],
)
def test_ctrl_c_under_load_prints_no_warning(
    client: Client, busy_daemon: Daemon, command: list[str]
) -> None:
    for trial in range(TRIALS):
        process = client.popen(
            "--ssh", client.target(), "--ssh-keyfile", str(client.key),
            "--endpoint", busy_daemon.endpoint, *command,
        )  # fmt: skip
        assert process.stdout is not None
        # Data is flowing once the command prints: events, or top's frames.
        assert process.stdout.readline(), f"trial {trial}: no output"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)

        assert process.returncode == 0, (trial, err)
        lines = [line for line in err.splitlines() if "listening on" not in line]
        assert lines == [], f"trial {trial}"
