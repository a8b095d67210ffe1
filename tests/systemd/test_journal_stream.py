"""JournalStream and SyslogStream against a real journald: circusd runs as
the installed unit in a booted container (the fixture of test_container),
and `journalctl -t WATCHER` must show each line with the child's pid."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.systemd import test_container as booted
from tests.systemd.test_container import (
    CONTROL,
    PYTHON_IN_CONTAINER,
    Container,
    wait_until,
)

container = booted.container  # the booted container, one for this module

pytestmark = pytest.mark.root

NONCE = uuid.uuid4().hex[:8]
JOURNALED, SYSLOGGED = f"jtest-{NONCE}", f"stest-{NONCE}"
CONFIG = f"""\
[circus]
endpoint = {CONTROL}
pubsub_endpoint = ipc:///run/circus/pubsub.sock

[watcher:{JOURNALED}]
cmd = /bin/sh -c 'echo out-line; printf "bad \\377 \\303\\251\\n";
    echo err-line >&2; exec sleep 1000'
stdout_stream.class = JournalStream
stderr_stream.class = JournalStream

[watcher:{SYSLOGGED}]
cmd = /bin/sh -c 'echo syslog-out; echo syslog-err >&2; exec sleep 1000'
stdout_stream.class = circus.stream.SyslogStream
stdout_stream.facility = local3
stderr_stream.class = SyslogStream
"""


def entries(container: Container, identifier: str, count: int) -> list[dict]:
    """The journal's entries for ``identifier``, once there are ``count``."""

    def read() -> list[dict] | None:
        output = container.run(
            "journalctl", "--no-pager", "-o", "json", "--all", "-t", identifier,
            check=False,
        ).stdout  # fmt: skip
        found = [json.loads(line) for line in output.splitlines() if line]
        return found if len(found) >= count else None

    return wait_until(read, 10, f"{count} journal entries for {identifier}")


def child_pid(container: Container, watcher: str) -> str:
    return container.circusctl("list", watcher).strip()


def test_journal_stream_lines_reach_the_journal_with_the_childs_pid(container):
    container.configure(CONFIG)
    container.systemctl("restart", "circusd")
    found = entries(container, JOURNALED, 3)
    by_message = {entry["MESSAGE"]: entry for entry in found}
    assert set(by_message) == {"out-line", "bad \ufffd é", "err-line"}
    pid = child_pid(container, JOURNALED)
    main = container.show("circusd", "MainPID")
    for entry in found:
        assert entry["SYSLOG_IDENTIFIER"] == JOURNALED  # the watcher's name
        assert entry["SYSLOG_PID"] == pid
        assert entry["OBJECT_PID"] == pid
        assert entry["_PID"] == main
        assert entry["CIRCUSD_WATCHER"] == JOURNALED
    assert by_message["out-line"]["PRIORITY"] == "6"
    assert by_message["err-line"]["PRIORITY"] == "3"
    assert by_message["err-line"]["CIRCUSD_STREAM"] == "stderr"
    shown = container.run("journalctl", "--no-pager", "-o", "cat", "-t", JOURNALED)
    assert "out-line" in shown.stdout and "err-line" in shown.stdout


def test_syslog_stream_lines_reach_the_journal_through_dev_log(container):
    found = entries(container, SYSLOGGED, 2)
    by_message = {entry["MESSAGE"]: entry for entry in found}
    assert set(by_message) == {"syslog-out", "syslog-err"}
    pid = child_pid(container, SYSLOGGED)
    assert {entry["SYSLOG_PID"] for entry in found} == {pid}
    assert by_message["syslog-out"]["SYSLOG_FACILITY"] == "19"  # local3
    assert by_message["syslog-out"]["PRIORITY"] == "6"
    assert by_message["syslog-err"]["SYSLOG_FACILITY"] == "3"  # daemon
    assert by_message["syslog-err"]["PRIORITY"] == "3"


SEND_LARGE = f"""
import sys
sys.path[:0] = ["/opt/circusd/src", "/opt/circusd/site-packages"]
from circusd.streams.datagram import sender
from circusd.streams.journal import journal_field, send_sealed

entry = journal_field("MESSAGE", b"m" * 400_000)
entry += journal_field("SYSLOG_IDENTIFIER", b"memfd-{NONCE}")
sender("/run/systemd/journal/socket", "journal", send_sealed).send(entry, 400_000)
"""


def test_an_entry_too_large_for_a_datagram_reaches_journald_in_a_memfd(container):
    container.run(PYTHON_IN_CONTAINER, "-c", SEND_LARGE)
    (entry,) = entries(container, f"memfd-{NONCE}", 1)
    assert entry["MESSAGE"] == "m" * 400_000
    container.systemctl("stop", "circusd")
