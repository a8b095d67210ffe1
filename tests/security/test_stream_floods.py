"""A local user against the statistics stream, which circusd-stats (a root
process) serves on loopback tcp or ipc.

libzmq keeps every subscription a connection sends, without a limit of its
own, so the stream lets in only callers who may read circusd's state (the
same rule as the control endpoint's read-only commands). The clients here
are real users running a standard-library ZMTP client under ``runuser``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from tests.conftest import Daemon, ServiceUser
from tests.security.conftest import SYSTEM_PYTHON, Intruder
from tests.web.conftest import Reader, reader  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def streams(start_daemon, workdir: Path, owner: ServiceUser, reader: Reader) -> Daemon:  # noqa: F811
    stats = free_port()
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        stats_endpoint = tcp://127.0.0.1:{stats}
        endpoint_owner = {owner.name}
        readonly_group = {reader.group}

        [watcher:web]
        cmd = sleep 600
        """
    )
    daemon.extra["stats"] = stats
    return daemon


def helper(daemon: Daemon) -> psutil.Process:
    children = psutil.Process(daemon.process.pid).children()
    found = [p for p in children if "circusd.metrics.helper" in p.cmdline()]
    assert len(found) == 1, [p.cmdline() for p in children]
    return found[0]


def subscriber_as(user: str, workdir: Path, *args: object) -> subprocess.Popen[str]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is needed to act as another user")
    script = workdir / "zmtp_subscriber.py"
    shutil.copy(HERE / "zmtp_subscriber.py", script)
    script.chmod(0o644)
    return subprocess.Popen(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answer(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=60)
    return output.strip()


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
        who: subscriber_as(who, workdir, "listen", "127.0.0.1", port, 3)
        for who in (owner.name, reader.name, intruder.name)
    }
    got = {who: answer(process) for who, process in listening.items()}

    assert got[intruder.name] in ("refused", "received 0"), got
    assert got[owner.name].startswith("received ") and got[owner.name] != "received 0"
    assert got[reader.name].startswith("received ") and got[reader.name] != "received 0"
    assert "stats subscriber refused" in streams.output()


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
        flood = subscriber_as(
            intruder.name, workdir,
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
    stranger = subscriber_as(intruder.name, workdir, "listen", f"@{name}", 0, 3)
    allowed = subscriber_as(owner.name, workdir, "listen", f"@{name}", 0, 3)

    assert answer(stranger) in ("refused", "received 0")
    assert answer(allowed) not in ("refused", "received 0")
    assert "stats subscriber refused" in daemon.output()
