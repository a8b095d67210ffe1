"""circusctl's pure parts: ``set`` value conversion and the text it prints."""

from __future__ import annotations

import signal

import pytest

from circusd.cli import render
from circusd.cli.circusctl import cli, convert_set_value
from circusd.client import Event
from circusd.errors import ValueProblem


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("numprocesses", "3", 3),
        ("max_retry", "-1", -1),
        ("max_age", "60", 60),
        ("max_age_variance", "5", 5),
        ("warmup_delay", "0.5", 0.5),
        ("graceful_timeout", "3", 3.0),
        ("respawn", "false", False),
        ("singleton", "True", True),
        ("stop_signal", "int", int(signal.SIGINT)),
        ("stop_signal", "SIGKILL", int(signal.SIGKILL)),
        ("stop_signal", "15", 15),
        ("env", "A=1,B=2", {"A": "1", "B": "2"}),
        ("cmd", "sleep 10", "sleep 10"),
        ("args", "--port 80", "--port 80"),
        ("uid", "1000", "1000"),
        ("working_dir", "/srv", "/srv"),
        ("stdout_stream.max_bytes", "1024", 1024),
        ("stdout_stream.filename", "/var/log/x", "/var/log/x"),
        ("rlimit_nofile", "1024", 1024),
        ("hooks.after_start", "mod.fn", "mod.fn"),
        ("flapping.max_retry", "2", "2"),
    ],
)
def test_set_values_are_converted_by_option_type(
    key: str, raw: str, expected: object
) -> None:
    converted = convert_set_value(key, raw)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("numprocesses", "three"),
        ("graceful_timeout", "soon"),
        ("respawn", "maybe"),
        ("stop_signal", "SIGNOPE"),
        ("env", "A"),
    ],
)
def test_set_values_that_do_not_fit_are_refused(key: str, raw: str) -> None:
    with pytest.raises(ValueProblem):
        convert_set_value(key, raw)


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    lines = render.table(("A", "LONGER"), [("x", ""), ("wide-cell", 2)])
    assert lines == ["A          LONGER", "x", "wide-cell  2"]


def test_pairs_align_the_equal_signs_and_show_json_for_non_text() -> None:
    lines = render.pairs({"numprocesses": 2, "env": {"A": "1"}, "cmd": "sleep"})
    assert lines == [
        "cmd          = sleep",
        'env          = {"A": "1"}',
        "numprocesses = 2",
    ]


def test_status_rows_show_the_reason_of_a_failed_watcher() -> None:
    lines = render.status_rows(
        {"web": "failed", "db": "active"},
        {"web": 0, "db": 1},
        {"web": "exited with code 3, 5 times in 10 s"},
    )
    assert lines == [
        "WATCHER  STATUS  PROCESSES  REASON",
        "db       active  1",
        "web      failed  0          exited with code 3, 5 times in 10 s",
    ]


def test_stats_indent_children_under_their_parent() -> None:
    info = {
        "pid": 10,
        "wid": 1,
        "cpu": 0.0,
        "mem": 0.1,
        "mem_info1": "1M",
        "mem_info2": "2M",
        "age": 75,
        "cmdline": "sh",
        "children": [
            {
                "pid": 11,
                "cpu": 0.0,
                "mem": 0.1,
                "age": 3,
                "cmdline": "sleep",
                "children": [],
            }
        ],
    }
    lines = render.stats({"web": {"10": info, "12": "No such process (stopped?)"}})
    assert lines == [
        "WATCHER  PID   WID  CPU%  MEM%  RSS  VMS  AGE    CMD",
        "web      10    1    0.0   0.1   1M   2M   1m15s  sh",
        "web        11       0.0   0.1             3s     sleep",
        "web      12                                      No such process (stopped?)",
    ]


def test_event_line_has_topic_and_fields() -> None:
    line = render.event_line(
        Event("watcher.web.reap", {"process_pid": 7, "exit_code": -15})
    )
    assert line == "watcher.web.reap exit_code=-15 process_pid=7"


def test_lifecycle_lists_pids_of_a_waited_command() -> None:
    reply = {"status": "ok", "info": {"stopped": [1], "started": [2, 3], "kept": []}}
    assert render.lifecycle(reply) == ["stopped: 1", "started: 2 3", "kept: -"]
    assert render.lifecycle({"status": "ok"}) == ["ok"]


def _parse(*args: str) -> dict[str, object]:
    root = cli.make_context("circusctl", list(args))
    command = cli.get_command(root, args[0])
    assert command is not None
    return command.make_context(args[0], list(args[1:]), parent=root).params


def test_set_values_may_start_with_a_dash() -> None:
    params = _parse("set", "web", "max_retry", "-1", "--waiting")
    assert params == {"name": "web", "pairs": ("max_retry", "-1"), "waiting": True}


def test_add_takes_everything_after_name_as_the_command() -> None:
    params = _parse("add", "--start", "web", "python", "-m", "http.server", "--waiting")
    assert params["cmd"] == ("python", "-m", "http.server", "--waiting")
    assert (params["start"], params["waiting"]) == (True, False)


def test_underscore_spellings_are_accepted_but_not_shown() -> None:
    params = _parse("kill", "web", "--graceful_timeout", "2")
    assert params["graceful_timeout"] == 2.0
    root = cli.make_context("circusctl", ["kill"])
    kill = cli.get_command(root, "kill")
    assert kill is not None
    assert "--graceful_timeout" not in kill.get_help(root)
    assert "--graceful-timeout" in kill.get_help(root)
