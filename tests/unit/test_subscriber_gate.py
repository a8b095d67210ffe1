"""The subscriber gate's ZAP answers and its audit lines, on made-up callers
and a fake clock."""

from __future__ import annotations

import logging

import pytest

from circusd.control.auth import Caller
from circusd.control.policy import Policy
from circusd.control.subscribers import RefusalLog, SubscriberGate

STRANGER = Caller(1234, 1234, 4321, "ipc")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "circusd.audit"]


def test_refusals_of_one_user_make_one_audit_line_a_minute(caplog):
    clock = Clock()
    log = RefusalLog("events", interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="circusd.audit"):
        for _ in range(50):  # a client that connects again every 100 ms
            log.refused(STRANGER)
            clock.now += 0.1
        clock.now += 60.0
        log.refused(STRANGER)

    lines = audit_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0] == (
        "refused subscriber stream=events uid=1234 pid=4321 via=ipc "
        "reason='may not read the state of circusd'"
    )
    assert lines[1].endswith(" refusals_not_logged=49")


def test_each_user_refused_gets_its_own_line(caplog):
    log = RefusalLog("stats", clock=Clock())
    with caplog.at_level(logging.INFO, logger="circusd.audit"):
        log.refused(STRANGER)
        log.refused(Caller(None, transport="tcp", detail="peer not on this host"))
        log.refused(Caller(1235, transport="tcp", detail="127.0.0.1"))

    assert audit_lines(caplog) == [
        "refused subscriber stream=stats uid=1234 pid=4321 via=ipc "
        "reason='may not read the state of circusd'",
        "refused subscriber stream=stats uid=unknown pid=unknown via=tcp "
        "reason='peer not on this host'",
        "refused subscriber stream=stats uid=1235 pid=unknown via=tcp "
        "peer='127.0.0.1' reason='may not read the state of circusd'",
    ]


def zap(domain: bytes, address: bytes, mechanism: bytes = b"NULL") -> list[bytes]:
    return [b"1.0", b"7", domain, address, b"", mechanism]


def test_the_gate_answers_only_for_readers_of_its_own_stream():
    gate = SubscriberGate("events", Policy(daemon_uid=0, owner_uid=1000), False)

    owner = gate.answer(zap(b"circusd-events-ipc", b"localhost:1000:1000:42"))
    stranger = gate.answer(zap(b"circusd-events-ipc", b"localhost:1234:1234:43"))
    curve = gate.answer(zap(b"circusd-events-ipc", b"localhost:0:0:44", b"CURVE"))

    assert owner[:4] == [b"1.0", b"7", b"200", b"OK"]
    assert stranger[2] == b"400" and curve[2] == b"400"
    assert gate.answers(b"circusd-events-tcp")
    assert not gate.answers(b"circusd-stats-tcp") and not gate.answers(b"circusd-ipc")


def test_a_failure_to_identify_refuses_the_subscriber():
    def broken() -> list[object]:
        raise OSError("no socket table")

    gate = SubscriberGate("events", Policy(daemon_uid=0), False)
    gate.tcp_peers._read = broken
    gate.listening(b"\x7f\0\0\x01", 5556)

    assert gate.answer(zap(b"circusd-events-tcp", b"127.0.0.1"))[2] == b"400"
