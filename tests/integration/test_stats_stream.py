"""The stats_endpoint stream: Circus's ``stat.`` topics from circusd-stats,
the helper process, read here with a plain ZeroMQ SUB socket."""

from __future__ import annotations

import itertools
import json
import os
import socket
import statistics
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from tests.conftest import Daemon, ServiceUser, wait_for

pytestmark = pytest.mark.timeout(90)

# The fields of one process in Circus 0.19's stream (circus.util.get_info
# plus the streamer's subtopic and name).
CIRCUS_PROCESS_FIELDS = {
    "pid", "cpu", "mem", "mem_info1", "mem_info2", "ctime", "username", "nice",
    "create_time", "age", "cmdline", "children", "subtopic", "name",
}  # fmt: skip
CIRCUS_AGGREGATE_FIELDS = {"pid", "cpu", "mem", "age"}

Message = tuple[str, dict[str, Any], float]


def stats_config(directory: Path, watchers: str, extra: str = "") -> str:
    circus = (
        f"[circus]\nendpoint = ipc://{directory}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{directory}/pub.sock\n"
        f"stats_endpoint = ipc://{directory}/stats.sock\n{extra}\n"
    )
    return circus + textwrap.dedent(watchers)


def subscriber(endpoint: str, topic: str = "stat.") -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


def receive(
    sock: zmq.Socket[Any], seconds: float, until: Callable[[list[Message]], bool]
) -> list[Message]:
    """Messages as (topic, data, arrival) until ``until`` holds or time is up."""
    found: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(found):
        if sock.poll(100):
            frames = sock.recv_multipart()
            assert len(frames) == 2, frames
            found.append((frames[0].decode(), json.loads(frames[1]), time.monotonic()))
    return found


def helper_pid(daemon: Daemon) -> int:
    children = psutil.Process(daemon.process.pid).children()
    helpers = [p for p in children if "circusd.metrics.helper" in p.cmdline()]
    assert len(helpers) == 1, [p.cmdline() for p in children]
    return helpers[0].pid


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_stream_sends_circus_topics_and_fields_once_a_second(start_daemon, workdir):
    daemon = start_daemon(
        stats_config(
            workdir,
            """
            [watcher:Sleepers]
            cmd = sleep 600
            numprocesses = 2
            """,
        )
    )
    pids = daemon.pids("Sleepers")
    sock = subscriber(f"ipc://{workdir}/stats.sock")
    try:
        messages = receive(
            sock, 10, lambda m: sum(t == f"stat.sleepers.{pids[0]}" for t, *_ in m) >= 3
        )
    finally:
        sock.close()

    topics = {topic for topic, *_ in messages}
    helper = helper_pid(daemon)
    assert {f"stat.sleepers.{pid}" for pid in pids} <= topics
    assert {"stat.sleepers", "stat.circus", f"stat.circus.{helper}"} <= topics
    assert f"stat.circus.{daemon.process.pid}" in topics
    by_topic = {topic: data for topic, data, _ in messages}
    process = by_topic[f"stat.sleepers.{pids[0]}"]
    assert set(process) == CIRCUS_PROCESS_FIELDS
    assert (process["pid"], process["subtopic"], process["name"]) == (
        pids[0],
        pids[0],
        None,
    )
    assert (process["cmdline"], process["children"]) == ("sleep", [])
    summary = by_topic["stat.sleepers"]
    assert set(summary) == CIRCUS_AGGREGATE_FIELDS
    assert sorted(summary["pid"]) == sorted(pids)
    assert by_topic[f"stat.circus.{daemon.process.pid}"]["name"] == "circusd"
    assert by_topic[f"stat.circus.{helper}"]["name"] == "circusd-stats"
    arrivals = [at for topic, _, at in messages if topic == f"stat.sleepers.{pids[0]}"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(0.7 < gap < 1.5 for gap in gaps), gaps


def test_stream_costs_nothing_while_nobody_subscribes(start_daemon, workdir):
    daemon = start_daemon(
        stats_config(workdir, "[watcher:w]\ncmd = sleep 600\nnumprocesses = 20")
    )
    helper = helper_pid(daemon)
    wait_for(lambda: "serving stats_endpoint" in daemon.output(), what="the helper")
    time.sleep(0.5)  # the helper's start-up is over
    before = cpu_ticks(helper)
    time.sleep(3.0)
    idle = cpu_ticks(helper) - before

    sock = subscriber(f"ipc://{workdir}/stats.sock")
    try:
        busy_start = cpu_ticks(helper)
        messages = receive(sock, 10, lambda m: len(m) >= 60)
        busy = cpu_ticks(helper) - busy_start
    finally:
        sock.close()

    assert idle == 0, f"{idle} clock ticks of CPU in 3 s without a subscriber"
    assert len(messages) >= 60 and busy > 0
    assert "subscriber arrived" in daemon.output()
    wait_for(lambda: "no subscriber left" in daemon.output(), what="unsubscription")
    time.sleep(0.5)
    after = cpu_ticks(helper)
    time.sleep(2.0)
    assert cpu_ticks(helper) - after == 0, "the helper still works after the last left"


def test_one_subscriber_leaving_does_not_stop_the_stream_for_another(
    start_daemon, workdir
):
    daemon = start_daemon(stats_config(workdir, "[watcher:w]\ncmd = sleep 600"))
    endpoint = f"ipc://{workdir}/stats.sock"
    staying, leaving = subscriber(endpoint), subscriber(endpoint)
    try:
        assert receive(leaving, 5, lambda m: len(m) >= 2), "nothing to begin with"
        leaving.close()
        receive(staying, 1.5, lambda m: False)  # what was sent before it left
        after = receive(staying, 5, lambda m: len(m) >= 6)
    finally:
        staying.close()
    assert {topic for topic, _, _ in after} >= {"stat.w", "stat.circus"}
    assert "no subscriber left" not in daemon.output().split("subscriber arrived")[-1]


def test_stream_publishes_only_the_watchers_subscribed_to(start_daemon, workdir):
    start_daemon(
        stats_config(
            workdir,
            """
            [watcher:web]
            cmd = sleep 600

            [watcher:webworker]
            cmd = sleep 600

            [watcher:queue]
            cmd = sleep 600
            """,
        )
    )
    sock = subscriber(f"ipc://{workdir}/stats.sock", "stat.web")
    try:
        messages = receive(sock, 4, lambda m: False)
    finally:
        sock.close()

    watchers = {topic.split(".")[1] for topic, *_ in messages}
    assert watchers == {"web", "webworker"}


def test_stream_carries_no_environment_values(start_daemon, workdir):
    start_daemon(
        stats_config(
            workdir,
            """
            [watcher:secretive]
            cmd = sh -c 'exec sleep 600'
            env = API_TOKEN=hunter2-value
            """,
        )
    )
    sock = subscriber(f"ipc://{workdir}/stats.sock")
    try:
        messages = receive(sock, 6, lambda m: len({t for t, *_ in m}) >= 6)
    finally:
        sock.close()

    assert any(topic.startswith("stat.secretive.") for topic, *_ in messages)
    assert all("hunter2" not in json.dumps(data) for _, data, _ in messages)


def test_socket_reads_count_waiting_connections(start_daemon, workdir):
    start_daemon(
        stats_config(
            workdir,
            """
            [socket:web]
            host = 127.0.0.1
            port = 0

            [watcher:idle]
            cmd = sleep 600
            """,
        )
    )
    sock = subscriber(f"ipc://{workdir}/stats.sock", "stat.sockets")
    try:
        first = receive(sock, 5, lambda m: any(t == "stat.sockets" for t, *_ in m))
        address = next(d["address"] for t, d, _ in first if t != "stat.sockets")
        host, _, port_text = address.rpartition(":")
        # Nobody accepts it: the connection stays waiting in the backlog.
        waiting = socket.create_connection((host, int(port_text)))
        try:
            later = receive(
                sock,
                5,
                lambda m: any(t == "stat.sockets" and d["reads"] > 10 for t, d, _ in m),
            )
        finally:
            waiting.close()
    finally:
        sock.close()

    totals = [d for t, d, _ in later if t == "stat.sockets"]
    assert totals and totals[-1]["reads"] > 10, totals
    assert totals[-1]["reads"] <= 101  # at most once per 10 ms
    assert totals[-1]["addresses"] == [address]
    per_fd = [d for t, d, _ in first if t.startswith("stat.sockets.")]
    assert set(per_fd[0]) == {"fd", "subtopic", "reads", "address"}


def test_a_killed_helper_is_replaced_and_subscribers_keep_receiving(
    start_daemon, workdir
):
    daemon = start_daemon(stats_config(workdir, "[watcher:w]\ncmd = sleep 600"))
    first = helper_pid(daemon)
    sock = subscriber(f"ipc://{workdir}/stats.sock", "stat.w")
    try:
        assert receive(sock, 5, lambda m: len(m) >= 2)
        os.kill(first, 9)
        wait_for(lambda: "circusd-stats exited" in daemon.output(), what="exit noticed")
        again = receive(sock, 10, lambda m: len(m) >= 2)
    finally:
        sock.close()

    assert len(again) >= 2
    assert helper_pid(daemon) != first


def test_globaloptions_names_the_stats_endpoint_only_when_it_is_served(
    start_daemon, workdir
):
    served = start_daemon(stats_config(workdir, "[watcher:w]\ncmd = sleep 600"))
    endpoint = served.ok("globaloptions")["options"]["stats_endpoint"]
    served.stop()
    off = start_daemon("[watcher:w]\ncmd = sleep 600")

    assert endpoint == f"ipc://{workdir}/stats.sock"
    assert off.ok("globaloptions")["options"]["stats_endpoint"] is None


def test_stats_ipc_socket_belongs_to_endpoint_owner_with_mode_0600(
    start_daemon, workdir, test_user: ServiceUser
):
    start_daemon(
        stats_config(
            workdir,
            "[watcher:w]\ncmd = sleep 600",
            f"endpoint_owner = {test_user.name}",
        )
    )
    info = os.stat(workdir / "stats.sock")

    assert (info.st_uid, info.st_mode & 0o777) == (test_user.uid, 0o600)
    leftovers = [p for p in os.listdir(workdir) if p.startswith(".")]
    assert leftovers == []  # the staging directory is gone


def test_status_answers_quickly_while_the_stream_samples_many_processes(
    start_daemon, workdir
):
    daemon = start_daemon(
        stats_config(workdir, "[watcher:many]\ncmd = sleep 600\nnumprocesses = 200")
    )
    sock = subscriber(f"ipc://{workdir}/stats.sock")
    try:
        assert receive(sock, 5, lambda m: len(m) >= 200)
        samples = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            daemon.ok("status")
            samples.append(time.perf_counter() - started)
            time.sleep(0.005)
        published = 0
        while sock.poll(0):
            sock.recv_multipart()
            published += 1
    finally:
        sock.close()

    assert published > 400  # the stream kept going meanwhile
    assert statistics.median(samples) < 0.05, statistics.median(samples)
    assert max(samples) < 0.5, max(samples)


def test_a_socket_added_by_reload_appears_in_the_stream(start_daemon, workdir):
    watcher = "[watcher:w]\ncmd = sleep 600\n"
    daemon = start_daemon(stats_config(workdir, watcher))
    config = daemon.config.read_text()
    daemon.config.write_text(config + "\n[socket:added]\nhost = 127.0.0.1\nport = 0\n")
    daemon.ok("reloadconfig", waiting=True)
    (added,) = daemon.ok("listsockets")["sockets"]

    sock = subscriber(f"ipc://{workdir}/stats.sock", "stat.sockets")
    try:
        messages = receive(sock, 10, lambda m: any(t == "stat.sockets" for t, *_ in m))
    finally:
        sock.close()

    summary = next(d for t, d, _ in messages if t == "stat.sockets")
    assert summary["addresses"] == [f"127.0.0.1:{added['port']}"]
    assert "sockets changed, restarting circusd-stats" in daemon.output()
