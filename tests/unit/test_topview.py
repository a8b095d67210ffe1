"""circusctl top's model: stream messages in, screen lines out."""

from __future__ import annotations

from circusd.cli.topview import STALE_AFTER, TopView, fleet_frame, size_bytes


def process(
    pid: int, cpu: float, rss: str, age: float, name: str | None = None
) -> dict:
    return {
        "pid": pid, "cpu": cpu, "mem": 0.5, "mem_info1": rss, "age": age,
        "username": "www", "cmdline": "worker", "name": name,
    }  # fmt: skip


def view() -> TopView:
    top = TopView()
    top.add("stat.web.10", process(10, 5.0, "10.0M", 100), now=0)
    top.add("stat.web.11", process(11, 50.0, "1.0M", 50), now=0)
    top.add("stat.web", {"pid": [10, 11], "cpu": 27.5}, now=0)  # aggregate: ignored
    top.add("stat.queue.20", process(20, 1.0, "100.0M", 500), now=0)
    top.add("stat.circus.1", process(1, 0.0, "30.0M", 900, name="circusd"), now=0)
    top.add("stat.sockets.5", {"fd": 5, "reads": 7, "address": "127.0.0.1:80"}, now=0)
    return top


def first_cells(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines[4:] if line.strip()]


def test_processes_sort_by_cpu_within_watchers_sorted_by_their_sum() -> None:
    lines = view().frame({"web": "active", "queue": "active", "idle": "stopped"})
    assert first_cells(lines)[:7] == [
        "web",
        "11",
        "10",
        "queue",
        "20",
        "idle",
        "circus",
    ]
    assert lines[4].split()[:5] == ["web", "active", "55.0", "1.0", "11.0M"]
    assert lines[-4].split()[-1] == "circusd"  # its name, not its command
    assert lines[-1].split() == ["127.0.0.1:80", "7"]


def test_memory_age_and_pid_orders_and_reverse() -> None:
    top = view()
    by_memory = first_cells(top.frame({}, sort="mem"))
    by_age_reversed = first_cells(top.frame({}, sort="age", reverse=True))
    by_pid = first_cells(top.frame({}, sort="pid"))
    assert by_memory[:5] == ["queue", "20", "web", "10", "11"]
    assert by_age_reversed[:5] == ["web", "11", "10", "queue", "20"]
    assert by_pid[:5] == ["queue", "20", "web", "10", "11"]  # names, then pids


def test_silent_processes_are_dropped_after_a_while() -> None:
    top = view()
    top.add("stat.web.11", process(11, 1.0, "1.0M", 52), now=STALE_AFTER)
    top.expire(now=STALE_AFTER + 0.5)
    assert list(top.processes) == ["web"] and list(top.processes["web"]) == [11]
    assert top.sockets == {}


def test_frame_fits_the_terminal() -> None:
    lines = view().frame({}, width=30, height=6)
    assert len(lines) == 6 and all(len(line) <= 30 for line in lines)
    assert lines[-1].startswith("... ")


def test_sizes_read_back_from_the_stats_fields() -> None:
    assert size_bytes("1.5K") == 1536
    assert size_bytes("2.0M") == 2 * 1024**2
    assert size_bytes("N/A") == size_bytes(None) == 0


def test_a_fleet_frame_has_one_title_and_a_section_per_host() -> None:
    statuses = {"web": "active", "queue": "active"}
    table = view().table(statuses, "mem")

    lines = fleet_frame(
        [("a", table), ("b", ["error: cannot connect"])], "mem", title="top - 2 hosts"
    )

    single = view().frame(statuses, "mem", title="top - 2 hosts")
    assert lines[:2] == single[:2]
    assert lines[2:] == [
        "", "== a ==", *single[3:], "", "== b ==", "error: cannot connect",
    ]  # fmt: skip
    assert lines.count("top - 2 hosts") == 1


def test_a_fleet_frame_fits_the_terminal() -> None:
    lines = fleet_frame([("a", ["x" * 50] * 10)], width=20, height=6)

    assert len(lines) == 6 and lines[-1] == "... 9 more lines"
    assert max(len(line) for line in lines) <= 20
