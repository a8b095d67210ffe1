"""A local user against what circusd-stats (a root process) serves: the
statistics stream on loopback tcp or ipc, and the Prometheus page.

libzmq keeps every subscription a connection sends, without a limit of its
own, so the stream lets in only callers who may read circusd's state (the
same rule as the control endpoint's read-only commands). The page is open
to every local user, so what they send it must cost little and leave
nothing behind. The clients here are real users running standard-library
clients (``zmtp_subscriber.py``, ``http_hostile.py``) under ``runuser``.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from tests.conftest import Daemon, ServiceUser
from tests.security.conftest import Intruder, answer, free_port, run_as, sent
from tests.web.conftest import Reader, reader  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]

MiB = 1024 * 1024
ZMTP, HTTP = "zmtp_subscriber.py", "http_hostile.py"


@pytest.fixture
def streams(start_daemon, workdir: Path, owner: ServiceUser, reader: Reader) -> Daemon:  # noqa: F811
    stats, prometheus = free_port(), free_port()
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        stats_endpoint = tcp://127.0.0.1:{stats}
        prometheus_endpoint = 127.0.0.1:{prometheus}
        endpoint_owner = {owner.name}
        readonly_group = {reader.group}

        [watcher:web]
        cmd = sleep 600
        """
    )
    daemon.extra.update(stats=stats, prometheus=prometheus)
    return daemon


def helper(daemon: Daemon) -> psutil.Process:
    children = psutil.Process(daemon.process.pid).children()
    found = [p for p in children if "circusd.metrics.helper" in p.cmdline()]
    assert len(found) == 1, [p.cmdline() for p in children]
    return found[0]


def stat_topics(sock: zmq.Socket[Any], seconds: float) -> list[str]:
    topics = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            topic, body = sock.recv_multipart()
            json.loads(body)
            topics.append(topic.decode())
    return topics


def test_only_users_who_may_read_get_the_statistics_stream(
    streams: Daemon, workdir: Path, owner: ServiceUser, reader: Reader,  # noqa: F811
    intruder: Intruder,
) -> None:  # fmt: skip
    port = streams.extra["stats"]
    listening = {
        who: run_as(who, workdir, ZMTP, "listen", "127.0.0.1", port, 3)
        for who in (owner.name, reader.name, intruder.name)
    }
    got = {who: answer(process) for who, process in listening.items()}

    assert got[intruder.name] in ("refused", "received 0"), got
    assert got[owner.name].startswith("received ") and got[owner.name] != "received 0"
    assert got[reader.name].startswith("received ") and got[reader.name] != "received 0"
    assert "refused subscriber stream=stats" in streams.output()


def test_a_subscription_flood_from_a_stranger_costs_circusd_stats_nothing(
    streams: Daemon, workdir: Path, intruder: Intruder
) -> None:
    stats = helper(streams)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"stat.web")
    sock.connect(f"tcp://127.0.0.1:{streams.extra['stats']}")
    try:
        assert stat_topics(sock, 3), "no statistics before the flood"
        before = stats.memory_info().rss
        # 6 MB of distinct 1000-byte subscriptions on 3 connections: kept,
        # they cost circusd-stats some 280 MB (libzmq keeps about 44 bytes
        # per byte of a distinct topic).
        flood = run_as(
            intruder.name, workdir, ZMTP,
            "flood", "127.0.0.1", streams.extra["stats"], 3, 2000, 1000, 2, "unique",
        )  # fmt: skip
        peak = before
        while flood.poll() is None:
            peak = max(peak, stats.memory_info().rss)
            time.sleep(0.05)
        assert answer(flood) == "sent"
        after = stat_topics(sock, 3)
    finally:
        sock.close()

    assert peak - before < 16 * MiB, f"circusd-stats grew {(peak - before) // MiB} MiB"
    assert any(topic.startswith("stat.web") for topic in after), after
    assert helper(streams).pid == stats.pid


def test_unsubscribing_a_stats_topic_never_held_leaves_other_subscribers_alone(
    streams: Daemon,
    workdir: Path,
    reader: Reader,  # noqa: F811
) -> None:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"stat.")
    sock.connect(f"tcp://127.0.0.1:{streams.extra['stats']}")
    try:
        assert stat_topics(sock, 3), "no statistics to begin with"
        other = run_as(
            reader.name, workdir, ZMTP,
            "unsubscribe", "127.0.0.1", streams.extra["stats"], 5, "stat.",
        )  # fmt: skip
        assert sent(other), "the unsubscription was not sent"
        stat_topics(sock, 1.5)  # what was on its way before it
        after = stat_topics(sock, 3)
        other.kill()
        other.communicate()
    finally:
        sock.close()

    assert after, "statistics stopped after a foreign unsubscription"


def test_an_abstract_stats_socket_is_closed_to_strangers_too(
    start_daemon, workdir: Path, owner: ServiceUser, intruder: Intruder
) -> None:
    # No file, so no file mode: only the gate stands between it and anyone.
    name = f"cd-stats-{uuid.uuid4().hex[:8]}"
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        stats_endpoint = ipc://@{name}
        endpoint_owner = {owner.name}

        [watcher:web]
        cmd = sleep 600
        """
    )
    stranger = run_as(intruder.name, workdir, ZMTP, "listen", f"@{name}", 0, 3)
    allowed = run_as(owner.name, workdir, ZMTP, "listen", f"@{name}", 0, 3)

    assert answer(stranger) in ("refused", "received 0")
    assert answer(allowed) not in ("refused", "received 0")
    assert "refused subscriber stream=stats" in daemon.output()


# -- the Prometheus page ---------------------------------------------------------


def scrape(port: int) -> tuple[int, float]:
    """The page's HTTP status, and how long it took."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        page.read()
        return page.status, time.monotonic() - started


def test_connections_reset_mid_request_leave_no_trace_in_circusds_log(
    streams: Daemon, workdir: Path, intruder: Intruder
) -> None:
    port = streams.extra["prometheus"]
    assert (
        answer(run_as(intruder.name, workdir, HTTP, "reset", "127.0.0.1", port, 20))
        == ""
    )
    assert scrape(port)[0] == 200

    assert "Traceback" not in streams.output()
    assert "ConnectionResetError" not in streams.output()


def test_slow_clients_cannot_keep_prometheus_from_the_page(
    streams: Daemon, workdir: Path, intruder: Intruder
) -> None:
    port = streams.extra["prometheus"]
    slow = run_as(intruder.name, workdir, HTTP, "hold", "127.0.0.1", port, 40, 4)
    try:
        time.sleep(1.0)  # all 40 connected and waiting
        scrapes = [scrape(port) for _ in range(3)]
    finally:
        assert answer(slow) == "held 40"

    assert all(status == 200 and took < 1.0 for status, took in scrapes), scrapes
