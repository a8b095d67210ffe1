"""File streams in the daemon's place: bytes unchanged, an outside rotation
followed, rotation by size and by time (on a fake clock)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from circusd.streams.files import (
    FOLLOW,
    FileStream,
    TimedRotatingFileStream,
    WatchedFileStream,
    next_rollover,
    prefixed,
)

UTC = datetime.UTC


def at(text: str) -> float:
    """A UTC moment written as 2026-12-03 10:20:30 (a Thursday)."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_file_stream_writes_exactly_the_childs_bytes(tmp_path: Path):
    out = tmp_path / "out.log"
    data = bytes(range(256)) * 3 + b"\n\r\x00no newline at the end"
    stream = FileStream(str(out))
    stream.write(data, 1)
    stream.end(1)
    stream.close()
    assert out.read_bytes() == data


def test_time_format_prefixes_lines_ended_by_a_newline_only():
    assert prefixed(b"a\rb\nc\n", "T ") == b"T a\rb\nT c\n"
    assert prefixed(b"a\nrest", "T ") == b"T a\nT rest"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_renamed_file_is_followed_by_a_new_one(tmp_path: Path):
    out, clock = tmp_path / "out.log", Clock()
    stream = FileStream(str(out), monotonic=clock)
    stream.write(b"one\n", 1)
    out.rename(tmp_path / "out.log.1")
    stream.write(b"two\n", 1)  # the name is looked at ten times a second
    clock.now += FOLLOW
    stream.write(b"three\n", 1)
    stream.close()
    assert (tmp_path / "out.log.1").read_bytes() == b"one\ntwo\n"
    assert out.read_bytes() == b"three\n"


def test_a_removed_file_is_created_again_by_every_file_stream(tmp_path: Path):
    out, clock = tmp_path / "out.log", Clock()
    stream = FileStream(str(out), max_bytes=1000, backup_count=2, monotonic=clock)
    stream.write(b"one\n", 1)
    out.unlink()
    clock.now += FOLLOW
    stream.write(b"two\n", 1)
    stream.close()
    assert out.read_bytes() == b"two\n"


def test_watched_file_stream_follows_too_and_never_rotates(tmp_path: Path):
    out, clock = tmp_path / "out.log", Clock()
    stream = WatchedFileStream(str(out), monotonic=clock)
    stream.write(b"x" * 100_000 + b"\n", 1)
    out.rename(tmp_path / "moved")
    clock.now += FOLLOW
    stream.write(b"after\n", 1)
    stream.close()
    assert out.read_bytes() == b"after\n"


def test_a_closed_stream_holds_no_file_and_opens_again(tmp_path: Path):
    out = tmp_path / "out.log"
    stream = FileStream(str(out))
    stream.close()
    stream.reopen()  # a reopen does not open a closed stream
    assert not any(
        os.readlink(f"/proc/self/fd/{fd}") == str(out)
        for fd in map(int, os.listdir("/proc/self/fd"))
        if os.path.exists(f"/proc/self/fd/{fd}")
    )
    stream.open()
    stream.write(b"back\n", 1)
    stream.close()
    assert out.read_bytes() == b"back\n"


def test_size_rotation_keeps_backup_count_files(tmp_path: Path):
    out = tmp_path / "out.log"
    stream = FileStream(str(out), max_bytes=10, backup_count=2)
    for number in range(5):
        stream.write(b"line %d....\n" % number, 1)
    stream.close()
    # A line that would take the file past max_bytes goes to a new one.
    assert out.read_bytes() == b"line 4....\n"
    assert (tmp_path / "out.log.1").read_bytes() == b"line 3....\n"
    assert (tmp_path / "out.log.2").read_bytes() == b"line 2....\n"
    assert not (tmp_path / "out.log.3").exists()


def test_next_rollover_follows_circus_units():
    now = at("2026-12-03 10:20:30")
    assert next_rollover(now, "S", 5, True) == now + 5
    assert next_rollover(now, "H", 2, True) == now + 7200
    assert next_rollover(now, "D", 1, True) == now + 86400
    assert next_rollover(now, "MIDNIGHT", 3, True) == at("2026-12-04 00:00:00")
    # W3 is Thursday, today: at the midnight that ends it.
    assert next_rollover(now, "W3", 1, True) == at("2026-12-04 00:00:00")
    assert next_rollover(now, "W0", 1, True) == at("2026-12-08 00:00:00")
    assert next_rollover(now, "W2", 1, True) == at("2026-12-10 00:00:00")


def test_timed_rotation_names_files_by_their_period_and_prunes(tmp_path: Path):
    out = tmp_path / "app.log"
    (tmp_path / "app.log.keep-me").write_text("not a backup")
    clock = [at("2026-12-03 10:20:30")]
    stream = TimedRotatingFileStream(
        str(out), "H", 1, 2, True, None, clock=lambda: clock[0]
    )
    for hour in range(4):
        stream.write(b"hour %d\n" % hour, 1)
        clock[0] += 3600
    stream.write(b"last\n", 1)
    stream.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.2026120312", "app.log.2026120313",
                     "app.log.keep-me"]  # fmt: skip
    assert (tmp_path / "app.log.2026120313").read_bytes() == b"hour 3\n"
    assert out.read_bytes() == b"last\n"
