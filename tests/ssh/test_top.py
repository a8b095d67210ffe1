"""``circusctl --ssh ... top``: the stats stream is tunnelled like the
control endpoint, through the real sshd of tests/ssh."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import CIRCUSCTL, Client
from tests.terminal import terminal

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


def test_top_in_a_terminal_through_ssh(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        """
        [circus]
        endpoint = ipc://{dir}/ctl.sock
        pubsub_endpoint = ipc://{dir}/pub.sock
        stats_endpoint = ipc://{dir}/stats.sock

        [watcher:sleeper]
        cmd = sleep 600
        numprocesses = 2
        """
    )
    pids = daemon.pids("sleeper")
    command = [
        str(CIRCUSCTL), "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", daemon.endpoint, "top",
    ]  # fmt: skip

    with terminal(command, env={"HOME": str(client.home), "SSH_AUTH_SOCK": ""}) as pane:
        screen = wait_for(
            lambda: (
                (text := pane.screen()) and all(str(p) in text for p in pids) and text
            ),
            timeout=30,
            what="top over ssh to show the sleepers",
        )
        pane.keys("q")
        status = wait_for(pane.exit_status, timeout=10, what="q to end top")

    assert "sleeper" in screen and "active" in screen
    assert status == "0"
