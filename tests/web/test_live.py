"""Live updates over the event stream: a change made outside the console
reaches an open page, and statistics from circusd's stats stream reach the
charts; one subscription to circusd serves every page."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.web.client import EventStream
from tests.web.conftest import PASSWORD


@pytest.fixture
def daemon(start_daemon, workdir: Path, request: pytest.FixtureRequest):
    owner = ""
    if os.geteuid() == 0:
        owner = f"endpoint_owner = {request.getfixturevalue('test_user').name}\n"
    return start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        f"stats_endpoint = ipc://{workdir}/stats.sock\n{owner}\n"
        "[watcher:web]\ncmd = sleep 300\nnumprocesses = 2\n"
        "[watcher:other]\ncmd = sleep 300\n"
    )


@pytest.fixture
def console(start_console, daemon, operator):
    return start_console(daemon, operator)


@pytest.fixture
def http(console):
    client = console.http()
    assert client.login("alice", PASSWORD).status == 303
    return client


def test_a_change_made_elsewhere_reaches_an_open_page(http, daemon) -> None:
    stream = EventStream(http, "/events?watcher=web")
    try:
        first = stream.until("fragments")
        assert 'data-status="active"' in first["summary"]
        daemon.ok("stop", name="web")  # not through the console
        started = time.monotonic()
        stopped = stream.until(
            "fragments", lambda data: 'data-status="stopped"' in data["summary"]
        )
        assert time.monotonic() - started < 5
        assert "No processes." in stopped["processes"]
    finally:
        stream.close()


def test_statistics_reach_the_charts_of_the_open_pages(http, daemon, console) -> None:
    overview = EventStream(http, "/events")
    page = EventStream(http, "/events?watcher=web")
    try:
        pids = set(daemon.pids("web"))
        seen: set[object] = set()
        deadline = time.monotonic() + 10
        while not {"web", *pids} <= seen and time.monotonic() < deadline:
            sample = page.until("stat")
            assert sample["watcher"] == "web"
            seen.add(sample["pid"] if sample["pid"] is not None else "web")
            assert sample["rss"] > 0 and sample["cpu"] is not None
        assert {"web", *pids} <= seen
        # The overview gets every watcher's totals, not single processes.
        sample = overview.until("stat")
        assert sample["pid"] is None and sample["watcher"] in ("web", "other")
        # Two pages, one subscription to each of circusd's streams.
        log = console.output()
        assert log.count("subscribed endpoint=") == 2, log
    finally:
        overview.close()
        page.close()


def test_a_page_opened_later_gets_the_history(http) -> None:
    stream = EventStream(http, "/events?watcher=web")
    try:
        # A tick sends each process's sample, then the watcher's total.
        stream.until("stat", lambda sample: sample["pid"] is None)
    finally:
        stream.close()
    later = EventStream(http, "/events?watcher=web")
    try:
        history = later.until("history")
        assert history["web"] and len(history["web"][0]) == 4  # t, cpu, mem, rss
    finally:
        later.close()


def test_one_session_cannot_open_pages_without_end(http) -> None:
    from circusd.web.hub import MAX_PAGES_PER_SESSION

    streams = [EventStream(http, "/events") for _ in range(MAX_PAGES_PER_SESSION)]
    try:
        for stream in streams:
            stream.until("hello")
        extra = EventStream(http, "/events")
        assert extra.response.status == 503
        assert "too many open pages" in extra.response.read().decode()
        extra.close()
        streams.pop().close()

        def reopened() -> bool:
            # The console notices the closed page at once (aiohttp 3.9+) or
            # at that stream's next message (3.8: a statistic each second).
            again = EventStream(http, "/events")
            again.close()
            return again.response.status == 200

        wait_for(reopened, 5, "a page to be allowed again")
    finally:
        for stream in streams:
            stream.close()


def test_a_watchers_page_lists_its_processes_with_pid_uid_cpu_memory_age(
    http, daemon
) -> None:
    page = http.get("/watchers/web").body
    pids = daemon.pids("web")
    assert len(pids) == 2
    for pid in pids:
        row = re.search(rf'<tr data-pid="{pid}">(.*?)</tr>', page)
        assert row, f"no row for pid {pid}"
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
        assert cells[0] == str(pid)
        assert cells[2] == 'root <span class="muted">(0)</span>'  # circusd's uid
        assert re.fullmatch(r"\d+\.\d %", cells[3]), cells[3]  # CPU
        assert re.fullmatch(r"\d+\.\d[KM] \(\d+\.\d %\)", cells[4]), cells[4]
        assert re.fullmatch(r"\d+s", cells[5]), cells[5]  # age
