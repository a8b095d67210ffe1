"""``circusctl top`` on several hosts: three daemons behind the test sshd
stand in for three hosts (each hosts-file line names its own endpoint), one
of them down."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import CIRCUSCTL, Client, Fleet, SSHServer
from tests.ssh.test_fleet import TIMEOUT, hosts_file
from tests.terminal import terminal

pytestmark = pytest.mark.timeout(120)

WITH_STATS = """
[circus]
endpoint = ipc://{dir}/ctl.sock
pubsub_endpoint = ipc://{dir}/pub.sock
stats_endpoint = ipc://{dir}/stats.sock

[watcher:sleeper]
cmd = sleep 600
numprocesses = 2
"""


def labels(client: Client, fleet: list[Daemon]) -> list[str]:
    return [f"{client.target()} {daemon.endpoint}" for daemon in fleet]


def test_top_json_shows_every_live_host_and_a_notice_for_the_dead_one(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(3, WITH_STATS)
    fleet[2].stop()
    live, dead = labels(client, fleet)[:2], labels(client, fleet)[2]

    result = client.run(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "--timeout", str(TIMEOUT), "--json", "top",
        "--iterations", "2",
    )  # fmt: skip

    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(frames) == 2, result.stderr
    hosts = frames[-1]["hosts"]
    assert list(hosts) == [*live, dead]
    for label, daemon in zip(live, fleet, strict=False):
        sleeper = hosts[label]["watchers"]["sleeper"]
        assert sleeper["status"] == "active"
        assert sorted(p["pid"] for p in sleeper["processes"]) == sorted(
            daemon.pids("sleeper")
        )
    assert "could not connect to" in hosts[dead]["error"]
    # A daemon that is down may come back: its host is tried again.
    assert set(hosts[dead]) in ({"error", "retry_in"}, {"error", "notice"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"circusctl: error: 1 of 3 hosts failed: {dead} (exit 1)"
    ]
    assert result.elapsed < 2 + TIMEOUT + 2


def test_top_json_exits_0_when_every_host_answers(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, WITH_STATS)

    result = client.run(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "--json", "top", "--iterations", "2",
    )  # fmt: skip

    assert (result.returncode, result.stderr) == (0, "")
    hosts = json.loads(result.stdout.splitlines()[-1])["hosts"]
    assert list(hosts) == labels(client, fleet)


def test_a_silent_host_does_not_hold_back_the_frames(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]], silent_host: int
) -> None:
    (daemon,) = start_fleet(1, WITH_STATS)
    silent = f"root@127.0.0.1:{silent_host}"

    result = client.run(
        "--ssh", client.target(), "--ssh", silent, "--ssh-keyfile", str(client.key),
        "--timeout", "20", "--endpoint", daemon.endpoint, "--json", "top",
        "--iterations", "3",
    )  # fmt: skip

    assert (result.returncode, result.stderr) == (0, "")
    frames = [json.loads(line)["hosts"] for line in result.stdout.splitlines()]
    assert [frame[silent] for frame in frames] == [{"notice": "connecting"}] * 3
    assert frames[-1][client.target()]["watchers"]["sleeper"]["status"] == "active"
    assert result.elapsed < 3 + 5  # three frames a second apart, not 20 s


def test_a_daemon_without_stats_is_a_notice_in_its_section(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    with_stats = start_fleet(1, WITH_STATS)
    without = start_fleet(1, "[watcher:sleeper]\ncmd = sleep 600\n")
    fleet = [*with_stats, *without]

    result = client.run(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "top", "--iterations", "2",
    )  # fmt: skip

    live, bare = labels(client, fleet)
    last = result.stdout.split("circusctl top - 2 hosts")[-1].splitlines()
    assert f"== {live} ==" in last and f"== {bare} ==" in last
    section = last[last.index(f"== {bare} ==") + 1]
    assert section.startswith("error: the daemon publishes no statistics")
    assert any(line.startswith("sleeper ") and "active" in line for line in last)
    assert result.returncode == 1


def test_top_in_a_terminal_shows_every_host_and_q_ends_every_session(
    client: Client, sshd: SSHServer, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(3, WITH_STATS)
    fleet[1].stop()
    names = labels(client, fleet)
    pids = fleet[0].pids("sleeper") + fleet[2].pids("sleeper")
    before = {process.pid for process in sshd.connections()}
    command = [
        str(CIRCUSCTL), "--ssh-hosts", str(hosts_file(client, fleet)),
        "--ssh-keyfile", str(client.key), "--timeout", str(TIMEOUT), "top",
    ]  # fmt: skip

    with terminal(command, env={"HOME": str(client.home), "SSH_AUTH_SOCK": ""}) as pane:
        screen = wait_for(
            lambda: (
                (text := pane.screen())
                and all(str(p) in text for p in pids)
                and f"== {names[1]} ==\nerror: " in text
                and text
            ),
            timeout=30,
            what="top to show both live hosts and the dead one's notice",
        )
        pane.keys("q")
        status = wait_for(pane.exit_status, timeout=10, what="q to end top")

    assert screen.count("circusctl top - 3 hosts") == 1
    assert "retrying in " in screen or "reconnecting" in screen
    for name in names:
        assert f"== {name} ==" in screen
    assert status == "1"
    wait_for(
        lambda: not ({p.pid for p in sshd.connections()} - before),
        timeout=5,
        what="every sshd session to end",
    )


def test_ctrl_c_ends_top_on_every_host(
    client: Client, sshd: SSHServer, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, WITH_STATS)
    before = {process.pid for process in sshd.connections()}
    top = client.popen(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "--json", "top",
    )  # fmt: skip
    assert top.stdout is not None
    wait_for(
        lambda: all(
            host.get("watchers")
            for host in json.loads(top.stdout.readline())["hosts"].values()
        ),
        timeout=30,
        what="every host's watchers in a frame",
    )

    top.send_signal(signal.SIGINT)
    _, err = top.communicate(timeout=10)

    assert (top.returncode, err) == (0, "")
    wait_for(
        lambda: not ({p.pid for p in sshd.connections()} - before),
        timeout=5,
        what="both sshd sessions to end",
    )


def test_a_daemon_that_stops_answering_does_not_hold_back_the_others(
    client: Client, start_fleet: Callable[[int, str], list[Daemon]]
) -> None:
    fleet = start_fleet(2, WITH_STATS)
    live, frozen = labels(client, fleet)
    top = client.popen(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "--timeout", str(TIMEOUT), "--json", "top",
    )  # fmt: skip
    assert top.stdout is not None
    wait_for(
        lambda: "watchers" in json.loads(top.stdout.readline())["hosts"][frozen],
        timeout=30,
        what="the second host's watchers in a frame",
    )

    fleet[1].process.send_signal(signal.SIGSTOP)
    try:
        arrivals, frames = [], []
        while not frames or "error" not in frames[-1][frozen]:
            frames.append(json.loads(top.stdout.readline())["hosts"])
            arrivals.append(time.monotonic())
            assert len(frames) < 3 * TIMEOUT, frames[-1][frozen]
        top.send_signal(signal.SIGINT)  # while the daemon is still silent
        _, err = top.communicate(timeout=10)
    finally:
        fleet[1].process.send_signal(signal.SIGCONT)

    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert max(gaps) < 1.5, gaps
    assert all(frame[live]["watchers"]["sleeper"]["processes"] for frame in frames)
    assert "no reply within 3 s" in frames[-1][frozen]["error"]
    assert top.returncode == 1
    assert err.splitlines() == [
        f"circusctl: error: 1 of 2 hosts failed: {frozen} (exit 1)"
    ]


def test_a_host_whose_daemon_stops_is_retried_and_comes_back(
    client: Client, sshd: SSHServer, start_fleet: Fleet
) -> None:
    """Over the same SSH connection: the daemon went, not the host."""
    fleet = start_fleet(3, WITH_STATS)
    names = labels(client, fleet)
    top = client.popen(
        "--ssh-hosts", str(hosts_file(client, fleet)), "--ssh-keyfile",
        str(client.key), "--timeout", str(TIMEOUT), "--json", "top",
    )  # fmt: skip
    assert top.stdout is not None

    def frame() -> dict[str, Any]:
        hosts: dict[str, Any] = json.loads(top.stdout.readline())["hosts"]
        return hosts

    wait_for(
        lambda: all("watchers" in host for host in frame().values()),
        timeout=30,
        what="every host's watchers in a frame",
    )
    fleet[1].stop()
    stopped = time.monotonic()
    down = wait_for(
        lambda: (hosts := frame()) and "error" in hosts[names[1]] and hosts,
        timeout=3 * TIMEOUT,
        what="the stopped daemon's notice",
    )
    noticed = time.monotonic() - stopped
    assert "watchers" in down[names[0]] and "watchers" in down[names[2]]
    logins = sshd.log.count("Accepted publickey for root")
    notices = [frame()[names[1]] for _ in range(3)]  # it is being retried
    assert all("error" in notice for notice in notices)
    assert all(notice.get("retry_in", 0) <= 5 for notice in notices)

    back = start_fleet.relaunch(fleet[1])
    ready = time.monotonic()
    pids = back.pids("sleeper")
    wait_for(
        lambda: (
            (sleeper := frame()[names[1]].get("watchers", {}).get("sleeper"))
            and sorted(p["pid"] for p in sleeper["processes"]) == sorted(pids)
        ),
        timeout=15,
        what="the restarted daemon's processes in a frame",
    )
    print(
        f"\nnotice {noticed:.1f} s after the stop, processes shown again "
        f"{time.monotonic() - ready:.1f} s after the daemon was ready"
    )
    top.send_signal(signal.SIGINT)
    _, err = top.communicate(timeout=10)

    assert (top.returncode, err) == (0, "")
    assert sshd.log.count("Accepted publickey for root") == logins
