"""The Prometheus page on ``prometheus_endpoint``, scraped over real HTTP and
parsed by the rules of the text exposition format."""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>[^}]*)\})? (?P<value>[-+]?[0-9.eE+-]+|NaN|[+-]Inf)$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


@dataclass
class Page:
    help: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(
        default_factory=dict
    )

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]


def parse(text: str) -> Page:
    """Strict enough to catch a malformed line: every sample's family has
    HELP and TYPE before it, labels are well formed, values are numbers."""
    page = Page()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP ") :].partition(" ")
            assert name not in page.help and doc
            page.help[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert kind in ("counter", "gauge"), line
            assert name in page.help and name not in page.types
            page.types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"malformed sample line {line!r}"
            name = match["name"]
            assert name in page.types, f"{name} has no TYPE line before it"
            labels = frozenset(LABEL.findall(match["labels"] or ""))
            key = (name, labels)
            assert key not in page.samples, f"duplicate sample {line!r}"
            page.samples[key] = float(match["value"])
    return page


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


CONFIG = """
[circus]
endpoint = ipc://{dir}/ctl.sock
pubsub_endpoint = ipc://{dir}/pub.sock
prometheus_endpoint = 127.0.0.1:PORT

[watcher:sleepers]
cmd = sleep 600
numprocesses = 3

[watcher:burner]
cmd = python3 -c "while True: pass"
graceful_timeout = 1

[watcher:idle]
cmd = sleep 600
autostart = false
"""


def test_metrics_page_has_help_type_and_values_per_watcher(start_daemon):
    port = free_port()
    daemon = start_daemon(CONFIG.replace("PORT", str(port)))
    content_type, text = scrape(port)
    page = parse(text)

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert page.types == {
        "circusd_watcher_processes": "gauge",
        "circusd_watcher_numprocesses": "gauge",
        "circusd_watcher_state": "gauge",
        "circusd_watcher_spawns_total": "counter",
        "circusd_watcher_unexpected_exits_total": "counter",
        "circusd_watcher_cpu_seconds_total": "counter",
        "circusd_watcher_memory_rss_bytes": "gauge",
        "circusd_daemon_cpu_seconds_total": "counter",
        "circusd_daemon_memory_rss_bytes": "gauge",
        "circusd_daemon_start_time_seconds": "gauge",
    }
    assert page.value("circusd_watcher_processes", watcher="sleepers") == 3
    assert page.value("circusd_watcher_processes", watcher="idle") == 0
    assert page.value("circusd_watcher_numprocesses", watcher="idle") == 1
    assert page.value("circusd_watcher_state", watcher="sleepers", state="active") == 1
    assert page.value("circusd_watcher_state", watcher="idle", state="stopped") == 1
    assert page.value("circusd_watcher_state", watcher="idle", state="active") == 0
    assert page.value("circusd_watcher_spawns_total", watcher="sleepers") == 3
    assert page.value("circusd_watcher_memory_rss_bytes", watcher="sleepers") > 1e5
    assert page.value("circusd_daemon_memory_rss_bytes") > 1e6
    started = page.value("circusd_daemon_start_time_seconds")
    assert abs(started - os.stat(f"/proc/{daemon.process.pid}").st_mtime) < 60

    burned = page.value("circusd_watcher_cpu_seconds_total", watcher="burner")
    later = wait_for(
        lambda: (
            (
                v := parse(scrape(port)[1]).value(
                    "circusd_watcher_cpu_seconds_total", watcher="burner"
                )
            )
            > burned + 0.3
            and v
        ),
        what="the burner's CPU counter to grow",
    )
    assert later > burned


def test_crashes_count_and_cpu_counter_does_not_go_down(start_daemon):
    port = free_port()
    daemon = start_daemon(CONFIG.replace("PORT", str(port)))
    wait_for(
        lambda: (
            parse(scrape(port)[1]).value(
                "circusd_watcher_cpu_seconds_total", watcher="burner"
            )
            > 0.2
        ),
        what="some CPU burned",
    )
    before = parse(scrape(port)[1])
    (pid,) = daemon.pids("burner")
    os.kill(pid, 9)
    wait_for(lambda: daemon.pids("burner") not in ([], [pid]), what="respawn")
    after = wait_for(
        lambda: (
            (page := parse(scrape(port)[1])).value(
                "circusd_watcher_spawns_total", watcher="burner"
            )
            == 2
            and page
        ),
        what="the metrics to see the respawn",
    )

    assert after.value("circusd_watcher_unexpected_exits_total", watcher="burner") == 1
    assert before.value("circusd_watcher_unexpected_exits_total", watcher="burner") == 0
    assert after.value(
        "circusd_watcher_cpu_seconds_total", watcher="burner"
    ) >= before.value("circusd_watcher_cpu_seconds_total", watcher="burner")
    assert (
        after.value("circusd_watcher_unexpected_exits_total", watcher="sleepers") == 0
    )


def test_only_get_metrics_is_served(start_daemon):
    port = free_port()
    start_daemon(CONFIG.replace("PORT", str(port)))

    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(port, "/")
    missing.value.close()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/metrics", body=b"x")
    posted = connection.getresponse()
    posted.read()
    posted.close()
    connection.close()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n")
    oversized = raw.recv(100)
    raw.close()

    assert missing.value.code == 404
    assert posted.status == 405
    assert oversized.startswith(b"HTTP/1.1 431")


def test_prometheus_endpoint_beyond_loopback_is_refused_at_load(start_daemon):
    daemon = start_daemon(
        """
        [circus]
        endpoint = ipc://{dir}/ctl.sock
        pubsub_endpoint = ipc://{dir}/pub.sock
        prometheus_endpoint = 0.0.0.0:9105

        [watcher:w]
        cmd = sleep 600
        """,
        ready=False,
    )

    assert daemon.wait_exit() == 78
    assert "prometheus_endpoint" in daemon.output()
    assert "insecure_tcp" in daemon.output()
