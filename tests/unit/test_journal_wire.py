"""JournalStream and SyslogStream on the wire: what a real AF_UNIX datagram
socket, bound here in journald's or syslog's place, receives."""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import os
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from circusd.streams import datagram
from circusd.streams.journal import (
    JournalStream,
    SyslogStream,
    journal_field,
    send_sealed,
    syslog_tag,
)

B18 = b"\x88\xff\n" + "é 日本語\n".encode() + b"\x00tail\n"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()
    datagram.close_all()


def parse_entry(data: bytes) -> dict[str, bytes]:
    """The journal's native format, read as journald reads it."""
    fields: dict[str, bytes] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8 : 8 + size]
            assert rest[8 + size : 9 + size] == b"\n"
            data = rest[9 + size :]
    return fields


def receive(sock: socket.socket) -> bytes:
    """One datagram, or the content of the memfd it carries."""
    return receive_how(sock)[0]


def receive_how(sock: socket.socket) -> tuple[bytes, str]:
    """One datagram, and how it came: in the datagram or in a memfd."""
    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd = array.array("i", payload[:4])[0]
            try:
                assert data == b""
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
                return os.pread(fd, os.fstat(fd).st_size, 0), "memfd"
            finally:
                os.close(fd)
    return data, "datagram"


def test_each_line_is_one_journal_entry_with_the_watchers_fields(receiver):
    stream = JournalStream("web", 2, address=receiver.getsockname())
    stream.write(B18, 4242)
    entries = [parse_entry(receive(receiver)) for _ in range(3)]
    assert [entry["MESSAGE"] for entry in entries] == [
        "\ufffd\ufffd".encode(),
        "é 日本語".encode(),
        "\ufffdtail".encode(),
    ]
    assert entries[0] == entries[0] | {
        "PRIORITY": b"3",  # err, for stderr
        "SYSLOG_FACILITY": b"3",
        "SYSLOG_IDENTIFIER": b"web",
        "SYSLOG_PID": b"4242",
        "OBJECT_PID": b"4242",
        "CIRCUSD_WATCHER": b"web",
        "CIRCUSD_STREAM": b"stderr",
    }


def test_stdout_is_info_and_priority_and_facility_can_be_set(receiver):
    JournalStream("w", 1, address=receiver.getsockname()).write(b"x\n", 1)
    assert parse_entry(receive(receiver))["PRIORITY"] == b"6"
    JournalStream("w", 1, 4, 16, address=receiver.getsockname()).write(b"y\n", 1)
    entry = parse_entry(receive(receiver))
    assert (entry["PRIORITY"], entry["SYSLOG_FACILITY"]) == (b"4", b"16")


def test_a_value_with_a_newline_is_sent_with_its_length():
    assert journal_field("A", b"one") == b"A=one\n"
    assert journal_field("A", b"x\ny") == b"A\n" + struct.pack("<Q", 3) + b"x\ny\n"


def test_an_entry_too_large_for_a_datagram_goes_in_a_sealed_memfd(receiver):
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    entry = journal_field("MESSAGE", b"z" * 600_000) + b"SYSLOG_IDENTIFIER=w\n"
    sender = datagram.sender(receiver.getsockname(), "journal", send_sealed)
    sender.send(entry, 600_000)
    data, how = receive_how(receiver)
    assert how == "memfd"
    assert parse_entry(data)["MESSAGE"] == b"z" * 600_000


def test_syslog_lines_are_in_the_form_of_syslog3(receiver):
    stream = SyslogStream("my app", 1, address=receiver.getsockname())
    stream.write(B18, 77)
    messages = [receive(receiver).decode() for _ in range(3)]
    stamp = r"[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d"
    pattern = rf"<30>{stamp} my_app\[77\]: (.*)"  # daemon (3) * 8 + info (6)
    texts = [re.fullmatch(pattern, message, re.S) for message in messages]
    assert [m and m.group(1) for m in texts] == [
        "\ufffd\ufffd",
        "é 日本語",
        "\ufffdtail",
    ]
    assert syslog_tag("a.b-c_d/é") == "a.b-c_d__"


def test_a_full_receiver_never_blocks_and_drops_past_the_queue(receiver, caplog):
    """Nobody reads: sending goes on, up to 1 MiB waits in the queue, the
    rest is dropped and counted, and the queue is sent once there is room."""
    caplog.set_level(logging.INFO)
    line = b"x" * 999 + b"\n"

    async def scenario() -> int:
        stream = JournalStream("busy", 1, address=receiver.getsockname())
        for _ in range(3000):  # 3 MB: more than the socket and the queue hold
            stream.write(line, 9)
        received = 0
        receiver.setblocking(False)
        for _ in range(200):  # read until the queue has gone out
            try:
                while True:
                    receiver.recv(1 << 16)
                    received += 1
            except BlockingIOError:
                pass
            await asyncio.sleep(0.01)
        stream.write(b"after\n", 9)
        await asyncio.sleep(0.05)
        return received

    received = asyncio.run(scenario())
    assert 100 < received < 3000
    errors = [r for r in caplog.records if "cannot send output" in r.message]
    assert len(errors) == 1
    again = [r.message for r in caplog.records if "reaches journal again" in r.message]
    dropped = int(re.search(r"dropped_bytes=(\d+)", again[0]).group(1))
    assert dropped == (3000 - received) * len(line)


def test_a_missing_log_daemon_drops_and_says_so_once(tmp_path, caplog):
    stream = SyslogStream("w", 1, address=str(tmp_path / "nobody.sock"))
    stream.write(b"one\ntwo\n", 1)
    stream.write(b"three\n", 1)
    assert [r.message for r in caplog.records if "cannot send" in r.message] == [
        f"cannot send output to syslog address={tmp_path}/nobody.sock "
        "error=ENOENT (dropping output until it works again)"
    ]
    datagram.close_all()
