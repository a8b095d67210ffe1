"""``circusctl --ssh ... top``: the stats stream is tunnelled like the
control endpoint, through the real sshd of tests/ssh."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Daemon
from tests.ssh.conftest import Client

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_top_reads_the_stats_stream_through_ssh(
    client: Client,
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
    transport: str,
) -> None:
    stats = (
        "ipc://{dir}/stats.sock"
        if transport == "ipc"
        else f"tcp://127.0.0.1:{free_tcp_port()}"
    )
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{{dir}}/ctl.sock
        pubsub_endpoint = ipc://{{dir}}/pub.sock
        stats_endpoint = {stats}

        [watcher:sleeper]
        cmd = sleep 600
        numprocesses = 2
        """
    )

    result = client.ssh(
        "--endpoint", daemon.endpoint, "--json", "top", "--iterations", "3"
    )

    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    sleeper = frames[-1]["watchers"]["sleeper"]
    assert sleeper["status"] == "active"
    assert sorted(p["pid"] for p in sleeper["processes"]) == sorted(
        daemon.pids("sleeper")
    )
    ages = [
        frame["watchers"]["sleeper"]["processes"][0]["age"]
        for frame in frames
        if frame["watchers"]["sleeper"]["processes"]
    ]
    assert len(ages) >= 2 and ages[-1] > ages[0]
