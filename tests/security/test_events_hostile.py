"""A local user against circusd's own event stream (``pubsub_endpoint``).

libzmq keeps every subscription a connection sends, without a limit of its
own, and circusd is a root process: the stream lets in only callers who may
read circusd's state (``circusd.control.subscribers``). The clients are real
users running a standard-library ZMTP subscriber (``zmtp_subscriber.py``)
under ``runuser``, Circus's own circusctl, and pyzmq subscribers as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from circusd.control.subscribers import HANDSHAKE_SECONDS
from tests.compat.conftest import CIRCUSCTL, wait_for_peer
from tests.conftest import Daemon, ServiceUser
from tests.security.conftest import Intruder, answer, free_port, run_as, sent
from tests.web.conftest import Reader, reader  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]

MiB = 1024 * 1024
ZMTP = "zmtp_subscriber.py"


def start_with_events(
    start_daemon: Callable[..., Daemon],
    workdir: Path,
    pubsub: str,
    owner: ServiceUser,
    reader: Reader,  # noqa: F811
) -> Daemon:
    return start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = {pubsub}
        endpoint_owner = {owner.name}
        readonly_group = {reader.group}

        [watcher:web]
        cmd = sleep 600
        """
    )


@pytest.fixture
def on_tcp(
    start_daemon, workdir: Path, owner: ServiceUser, reader: Reader  # noqa: F811
) -> Daemon:  # fmt: skip
    port = free_port()
    daemon = start_with_events(
        start_daemon, workdir, f"tcp://127.0.0.1:{port}", owner, reader
    )
    daemon.extra.update(host="127.0.0.1", port=port, address=f"tcp://127.0.0.1:{port}")
    return daemon


def make_events(daemon: Daemon, until: Callable[[], bool], limit: float = 30) -> None:
    """Start and stop processes (spawn, kill and reap events) until ``until``."""
    deadline = time.monotonic() + limit
    while not until() and time.monotonic() < deadline:
        daemon.ok("incr", name="web")
        daemon.ok("decr", name="web")
        time.sleep(0.1)


def subscriber(address: str, topic: bytes = b"watcher.") -> zmq.Socket[Any]:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(address)
    return sock


def events_reach(daemon: Daemon, sock: zmq.Socket[Any], seconds: float = 10) -> bool:
    """Whether events made now reach ``sock`` within ``seconds``."""
    seen: list[str] = []

    def arrived() -> bool:
        while sock.poll(50):
            topic, body = sock.recv_multipart()
            json.loads(body)
            seen.append(topic.decode())
        return bool(seen)

    make_events(daemon, arrived, seconds)
    return all(topic.startswith("watcher.web.") for topic in seen) and bool(seen)


def refusals(daemon: Daemon, uid: int) -> list[str]:
    return [
        line
        for line in daemon.output().splitlines()
        if "circusd.audit: refused subscriber stream=events" in line
        and f" uid={uid} " in line
    ]


def test_only_users_who_may_read_get_events_over_loopback_tcp(
    on_tcp: Daemon, workdir: Path, owner: ServiceUser, reader: Reader,  # noqa: F811
    intruder: Intruder,
) -> None:  # fmt: skip
    host, port = on_tcp.extra["host"], on_tcp.extra["port"]
    listening = {
        who: run_as(who, workdir, ZMTP, "listen", host, port, 4, "watcher.")
        for who in (owner.name, reader.name, intruder.name)
    }
    make_events(on_tcp, lambda: all(p.poll() is not None for p in listening.values()))
    got = {who: answer(process) for who, process in listening.items()}

    assert got[intruder.name] in ("refused", "received 0"), got
    assert got[owner.name].startswith("received ") and got[owner.name] != "received 0"
    assert got[reader.name].startswith("received ") and got[reader.name] != "received 0"
    # The intruder's client connected again and again; one audit line says so.
    lines = refusals(on_tcp, intruder.uid)
    assert len(lines) == 1, lines
    assert "via=tcp" in lines[0], lines[0]


def test_a_strangers_refusals_over_ipc_name_its_pid(
    start_daemon, workdir: Path, owner: ServiceUser, reader: Reader,  # noqa: F811
    intruder: Intruder,
) -> None:  # fmt: skip
    name = f"cd-events-{uuid.uuid4().hex[:8]}"  # abstract: no file mode to help
    daemon = start_with_events(start_daemon, workdir, f"ipc://@{name}", owner, reader)
    stranger = run_as(
        intruder.name, workdir, ZMTP, "listen", f"@{name}", 0, 3, "watcher."
    )
    allowed = run_as(reader.name, workdir, ZMTP, "listen", f"@{name}", 0, 3, "watcher.")
    make_events(
        daemon, lambda: stranger.poll() is not None and allowed.poll() is not None
    )

    assert answer(stranger) in ("refused", "received 0")
    assert answer(allowed) not in ("refused", "received 0")
    lines = refusals(daemon, intruder.uid)
    assert len(lines) == 1, lines
    assert "via=ipc" in lines[0] and "pid=unknown" not in lines[0], lines[0]


@pytest.mark.parametrize("transport", ["tcp", "abstract ipc"])
def test_a_subscription_flood_from_a_stranger_costs_circusd_nothing(
    transport: str, start_daemon, workdir: Path, owner: ServiceUser,
    reader: Reader, intruder: Intruder,  # noqa: F811
) -> None:  # fmt: skip
    if transport == "tcp":
        port = free_port()
        host, address = "127.0.0.1", f"tcp://127.0.0.1:{port}"
    else:
        host, port = f"@cd-events-{uuid.uuid4().hex[:8]}", 0
        address = f"ipc://{host}"
    daemon = start_with_events(start_daemon, workdir, address, owner, reader)
    circusd = psutil.Process(daemon.process.pid)
    sock = subscriber(address)
    try:
        assert events_reach(daemon, sock), "no events before the flood"
        before = circusd.memory_info().rss
        # 6 MB of distinct 1000-byte subscriptions on 3 connections: kept,
        # they would cost circusd some 280 MB.
        flood = run_as(
            intruder.name, workdir, ZMTP,
            "flood", host, port, 3, 2000, 1000, 2, "unique",
        )  # fmt: skip
        peak = before
        while flood.poll() is None:
            peak = max(peak, circusd.memory_info().rss)
            # libzmq takes subscriptions in when circusd publishes
            daemon.ok("incr", name="web")
            daemon.ok("decr", name="web")
            time.sleep(0.05)
        assert answer(flood) == "sent"
        peak = max(peak, circusd.memory_info().rss)
        assert events_reach(daemon, sock), "no events after the flood"
    finally:
        sock.close()

    assert peak - before < 16 * MiB, f"circusd grew {(peak - before) // MiB} MiB"


def test_unsubscribing_topics_never_held_leaves_other_subscribers_alone(
    on_tcp: Daemon,
    workdir: Path,
    reader: Reader,  # noqa: F811
) -> None:
    sock = subscriber(on_tcp.extra["address"])
    try:
        assert events_reach(on_tcp, sock)
        other = run_as(
            reader.name, workdir, ZMTP, "unsubscribe",
            on_tcp.extra["host"], on_tcp.extra["port"], 4,
            "watcher.", "watcher.web.", "",
        )  # fmt: skip
        assert sent(other), "the unsubscription was not sent"
        time.sleep(0.5)
        while sock.poll(0):
            sock.recv_multipart()  # what was on its way before it
        assert events_reach(on_tcp, sock), "events stopped after a foreign unsubscribe"
        assert other.poll() is None, "the connection was not held meanwhile"
        other.kill()
        other.communicate()
    finally:
        sock.close()


def test_idle_connections_are_closed_after_the_handshake_time(
    on_tcp: Daemon, workdir: Path, intruder: Intruder
) -> None:
    circusd = psutil.Process(on_tcp.process.pid)
    before = circusd.num_fds()
    idle = run_as(
        intruder.name, workdir, ZMTP,
        "idle", on_tcp.extra["host"], on_tcp.extra["port"], 100, HANDSHAKE_SECONDS + 10,
    )  # fmt: skip
    time.sleep(1.0)
    held = circusd.num_fds() - before
    result = answer(idle)

    assert held >= 90, f"only {held} of 100 idle connections were held"
    closed, after = result.split()[1], float(result.split()[-1])
    assert closed == "100", result
    assert after < HANDSHAKE_SECONDS + 3, result
    assert circusd.num_fds() - before < 5


def test_circus_circusctl_listen_gets_events_through_the_gate(on_tcp: Daemon) -> None:
    wait_for_peer()
    listener = subprocess.Popen(
        [str(CIRCUSCTL), "--endpoint", on_tcp.extra["address"], "listen", "watcher."],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert listener.stdout is not None
    lines: list[str] = []
    collector = threading.Thread(target=lambda: lines.extend(listener.stdout or []))
    collector.start()
    # Circus prints the raw frames: b'watcher.web.spawn': b'{...}'
    wanted = ("b'watcher.web.spawn': ", "b'watcher.web.reap': ")
    try:
        # It misses what is published before it has subscribed: keep making
        # events until it has printed both kinds.
        make_events(
            on_tcp, lambda: all(any(w in line for line in lines) for w in wanted)
        )
    finally:
        listener.terminate()
        listener.wait(10)
        collector.join(10)
        listener.stdout.close()

    output = "".join(lines)
    assert all(w in output for w in wanted), output
