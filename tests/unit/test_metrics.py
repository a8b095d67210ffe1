"""Pure parts of statistics: the config keys, the snapshot the daemon sends
its helper, subscription interest, Circus's aggregate, the Prometheus text."""

from __future__ import annotations

from pathlib import Path

import pytest

from circusd.metrics.collect import Interest, aggregate
from circusd.metrics.prometheus import MetricsPage, label_value, number
from circusd.metrics.snapshot import (
    ProcessEntry,
    Snapshot,
    SocketEntry,
    WatcherEntry,
    decode,
    encode,
)
from circusd.stats import Sampler
from tests.unit.test_config_loader import load_error, load_text


def test_statsd_alone_serves_circus_default_stats_endpoint(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nstatsd = true\n")
    assert config.circus.stats_endpoint == "tcp://127.0.0.1:5557"


def test_stats_endpoint_alone_turns_statsd_on(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nstats_endpoint = ipc://stats.sock\n")
    assert config.circus.statsd
    assert config.circus.stats_endpoint == f"ipc://{tmp_path}/stats.sock"


def test_no_statsd_no_stats_endpoint(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nstatsd = false\n")
    assert config.circus.stats_endpoint is None


@pytest.mark.parametrize(
    "value", ["127.0.0.1:9105", "localhost:9105", "[::1]:9105", "127.0.0.9:1"]
)
def test_prometheus_endpoint_on_loopback_is_accepted(
    tmp_path: Path, value: str
) -> None:
    config = load_text(tmp_path, f"[circus]\nprometheus_endpoint = {value}\n")
    assert config.circus.prometheus_endpoint == value


@pytest.mark.parametrize("value", ["0.0.0.0:9105", "192.0.2.1:9105", "[::]:9105"])
def test_prometheus_endpoint_beyond_loopback_needs_insecure_tcp(
    tmp_path: Path, value: str
) -> None:
    text = f"[circus]\nprometheus_endpoint = {value}\n"
    path, error = load_error(tmp_path, text)
    allowed = load_text(tmp_path, text + "insecure_tcp = true\n")

    assert (error.path, error.line, error.key) == (path, 2, "prometheus_endpoint")
    assert "insecure_tcp" in str(error)
    assert allowed.circus.prometheus_endpoint == value


@pytest.mark.parametrize("value", ["9105", "localhost", "host:99999", "[::1:9105"])
def test_prometheus_endpoint_must_be_host_and_port(tmp_path: Path, value: str) -> None:
    _, error = load_error(tmp_path, f"[circus]\nprometheus_endpoint = {value}\n")
    assert "HOST:PORT" in str(error) or "[IPV6]:PORT" in str(error)


def test_snapshot_survives_the_pipe() -> None:
    snapshot = Snapshot(
        42,
        (
            WatcherEntry("web", "active", 2, 3, 1, (ProcessEntry(7, 1, 1.5),)),
            WatcherEntry("idle", "stopped", 1, 0, 0),
        ),
        (SocketEntry("web", 9, "127.0.0.1:80"),),
    )
    line = encode(snapshot)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == snapshot


class Descriptors:
    """Which connection each descriptor stands for now (``Interest``'s view
    of the process's descriptor table)."""

    def __init__(self) -> None:
        self.open: dict[int, tuple[int, int]] = {}
        self._next = 0

    def connect(self, fd: int) -> int:
        self._next += 1
        self.open[fd] = (1, self._next)
        return fd

    def close(self, fd: int) -> None:
        del self.open[fd]

    def __call__(self, fd: int) -> tuple[int, int] | None:
        return self.open.get(fd)


def test_interest_follows_xpub_subscriptions() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    one = fds.connect(7)
    assert not interest
    interest.update(b"\x01stat.web", one)
    assert interest.wants("web") and interest.wants("webworker")
    assert not interest.wants("queue")
    interest.update(b"\x01stat.queue.12", one)  # one process of queue
    assert interest.wants("queue")
    interest.update(b"\x00stat.web", one)
    interest.update(b"\x00stat.queue.12", one)
    assert not interest
    interest.update(b"\x01", one)  # everything
    assert interest.wants("circus") and interest.wants("sockets")


def test_a_topic_is_wanted_until_its_last_holder_lets_go() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    one, two = fds.connect(7), fds.connect(8)
    interest.update(b"\x01stat.", one)
    interest.update(b"\x01stat.", one)  # again: still one holder
    interest.update(b"\x01stat.", two)
    interest.update(b"\x00stat.", one)
    assert interest.wants("web")
    interest.update(b"\x00stat.", two)
    assert not interest


def test_unsubscribing_what_a_connection_does_not_hold_changes_nothing() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    holder, other = fds.connect(7), fds.connect(8)
    interest.update(b"\x01stat.", holder)
    interest.update(b"\x00stat.", other)  # never held
    interest.update(b"\x01stat.", other)
    interest.update(b"\x00stat.", other)
    interest.update(b"\x00stat.", other)  # held once, not any more
    assert interest.prefixes == {"stat."}


def test_a_connection_that_ended_loses_its_topics_when_libzmq_tells_of_it() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    gone, staying = fds.connect(7), fds.connect(8)
    interest.update(b"\x01stat.web", gone)
    interest.update(b"\x01stat.queue", staying)
    fds.close(gone)
    interest.update(b"\x00stat.web", None)  # libzmq's, from no connection
    assert interest.prefixes == {"stat.queue"}
    fds.close(staying)
    interest.update(b"\x00stat.queue", None)
    assert not interest


def test_a_descriptor_closed_late_is_found_at_the_next_look() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    fd = fds.connect(7)
    interest.update(b"\x01stat.", fd)
    interest.update(b"\x00stat.", None)  # told before the descriptor closed
    assert interest
    fds.close(fd)
    interest.collect()
    assert not interest


def test_a_new_connection_on_a_reused_descriptor_starts_with_nothing() -> None:
    fds = Descriptors()
    interest = Interest(fds)
    fd = fds.connect(7)
    interest.update(b"\x01stat.web", fd)
    fds.close(fd)
    fds.connect(7)
    interest.update(b"\x01stat.queue", fd)
    assert interest.prefixes == {"stat.queue"}
    interest.update(b"\x00stat.web", fd)  # the old connection's topic
    assert interest.prefixes == {"stat.queue"}


def test_subscriptions_that_name_no_connection_are_kept_for_good() -> None:
    # What a libzmq without ZMQ_SRCFD would give: the stream publishes to
    # nobody rather than falls silent for someone.
    fds = Descriptors()
    interest = Interest(fds)
    interest.update(b"\x01stat.web", None)
    interest.update(b"\x00stat.web", None)
    interest.collect()
    assert interest.prefixes == {"stat.web"}


def test_aggregate_is_circus_mean_cpu_summed_memory_oldest_age() -> None:
    infos = {
        1: {"cpu": 10.0, "mem": 1.5, "age": 30.0},
        2: {"cpu": 30.0, "mem": 0.5, "age": 90.0},
    }
    assert aggregate(infos) == {"pid": [1, 2], "cpu": 20.0, "mem": 2.0, "age": 90.0}


def test_prometheus_text_escapes_label_values_and_formats_numbers() -> None:
    assert label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert (number(3), number(2.0), number(0.25)) == ("3", "2", "0.25")


def test_metrics_page_lists_every_watcher_even_without_processes() -> None:
    snapshot = Snapshot(
        2**22 + 1,  # no such process: the daemon's own lines are left out
        (WatcherEntry("idle", "failed", 1, 5, 5),),
    )
    text = MetricsPage(lambda: snapshot, Sampler()).render()
    assert 'circusd_watcher_state{watcher="idle",state="failed"} 1\n' in text
    assert 'circusd_watcher_unexpected_exits_total{watcher="idle"} 5\n' in text
    assert 'circusd_watcher_cpu_seconds_total{watcher="idle"} 0\n' in text
    assert "circusd_daemon_" not in text
