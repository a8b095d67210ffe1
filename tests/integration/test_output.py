"""Children's output under the real daemon: nothing lost, nothing blocked
(cases B16, B17, B18 and B20, a full disk, hundreds of pipes)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, ServiceUser, wait_for

PROGRAMS = REPO / "tests" / "programs"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
B18 = (
    b"\x88\xff\n"
    + b"a" * 1022
    + "é".encode()
    + b"\n"
    + "日本語\n".encode()
    + b"\x00tail\n"
)
LINE = 210  # bytes in each line of steady_writer.py


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


# -- B16 -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "quit"])
def test_output_still_in_the_pipe_at_stop_reaches_the_file(start_daemon, workdir, how):
    log, ready = workdir / "b16.log", workdir / "ready"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {PYTHON} {PROGRAMS}/burst.py {ready}
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    wait_for(ready.exists, what="the burst to be written")
    daemon.ok(how, **({"name": "w"} if how == "stop" else {}), waiting=True)
    if how == "quit":
        daemon.wait_exit()
    pattern = bytes(range(256)) * 800
    assert log.read_bytes() == pattern + b"END\n" + b"t" * 300 * 1024 + b"BYE\n"


def test_a_pipe_an_escaped_grandchild_holds_delays_a_stop_two_seconds_at_most(
    start_daemon, workdir
):
    log, holder = workdir / "held.log", workdir / "holder.pid"
    # The grandchild leaves the session and its parent: stop cannot find it,
    # and it keeps the pipe open for 30 s.
    escape = f'setsid sh -c "echo \\$\\$ > {holder}; exec sleep 30"'
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c '({escape} &); echo started; exec sleep 300'
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    wait_for(lambda: holder.exists() and holder.read_text().strip(), what="holder")
    grandchild = int(holder.read_text())
    try:
        wait_for(lambda: log.exists() and log.read_bytes() == b"started\n")
        started = time.monotonic()
        daemon.ok("stop", name="w", waiting=True)
        took = time.monotonic() - started
        assert os.path.exists(f"/proc/{grandchild}"), "stop found the grandchild"
        assert 1.5 < took < 4.0, took
        assert "output pipe still open after the process stopped" in daemon.output()
        assert not [p for p in open_files(daemon.process.pid) if p.startswith("pipe:")]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)


# -- B17 -------------------------------------------------------------------------


def numbers(path: Path) -> list[int]:
    return [int(n) for n in re.findall(rb"^line(\d+)$", path.read_bytes(), re.M)]


def growing(path: Path) -> bool:
    """Whether ``path`` gets new lines within a second."""
    before = path.stat().st_size if path.exists() else -1
    time.sleep(1.0)
    return path.exists() and path.stat().st_size > before


@pytest.mark.root
def test_a_file_renamed_or_removed_by_logrotate_is_reopened(
    start_daemon, workdir, test_user: ServiceUser
):
    log = workdir / "b17.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'i=0; while :; do i=$((i+1)); echo line$i; sleep 0.1; done'
        uid = {test_user.name}
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    wait_for(lambda: log.exists() and numbers(log), what="first lines")

    log.rename(workdir / "b17.log.1")  # logrotate's "create" style
    wait_for(lambda: log.exists() and numbers(log), timeout=2, what="a new b17.log")
    assert not growing(workdir / "b17.log.1")
    assert numbers(workdir / "b17.log.1")[-1] + 1 == numbers(log)[0]
    assert log.stat().st_uid == test_user.uid

    log.unlink()
    wait_for(lambda: log.exists() and numbers(log), timeout=2, what="b17.log again")

    daemon.ok("stop", name="w", waiting=True)
    leftovers = [path for path in open_files(daemon.process.pid) if "b17.log" in path]
    assert leftovers == []
    daemon.ok("start", name="w", waiting=True)
    assert growing(log)
    assert "Traceback" not in daemon.output()


def test_a_watcher_whose_last_process_ended_holds_no_file(start_daemon, workdir):
    log = workdir / "once.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'echo bye'
        respawn = false
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    wait_for(lambda: daemon.ok("status", name="w")["status"] == "stopped",
             what="the watcher to stop by itself")  # fmt: skip
    assert log.read_bytes() == b"bye\n"
    wait_for(lambda: str(log) not in open_files(daemon.process.pid),
             what="the file to be closed")  # fmt: skip
    daemon.ok("start", name="w", waiting=True)
    wait_for(lambda: log.read_bytes() == b"bye\nbye\n", what="a second run")


def test_reopen_command_reopens_the_files_of_a_watcher(start_daemon, workdir):
    log = workdir / "quiet.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'echo once; exec sleep 300'
        stdout_stream.class = WatchedFileStream
        stdout_stream.filename = {log}
        """)
    wait_for(lambda: log.exists() and log.read_bytes() == b"once\n", what="output")
    log.rename(workdir / "quiet.log.1")
    daemon.ok("reopen", name="w")
    # Reopened at once, not at the next write (this child writes no more).
    assert log.exists() and log.read_bytes() == b""
    assert str(workdir / "quiet.log.1") not in open_files(daemon.process.pid)
    assert daemon.call("reopen", name="nosuch")["status"] == "error"


def test_sigusr1_reopens_the_files_of_every_watcher(start_daemon, workdir):
    logs = {name: workdir / f"{name}.log" for name in ("a", "b", "b-err")}
    daemon = start_daemon(f"""
        [watcher:a]
        cmd = sh -c 'echo once; exec sleep 300'
        stdout_stream.class = FileStream
        stdout_stream.filename = {logs["a"]}

        [watcher:b]
        cmd = sh -c 'echo once; echo once >&2; exec sleep 300'
        stdout_stream.class = WatchedFileStream
        stdout_stream.filename = {logs["b"]}
        stderr_stream.class = TimedRotatingFileStream
        stderr_stream.filename = {logs["b-err"]}
        """)
    for log in logs.values():
        wait_for(lambda log=log: log.exists() and log.read_bytes() == b"once\n",
                 what=f"output in {log.name}")  # fmt: skip
        log.rename(log.with_suffix(".log.1"))
    daemon.process.send_signal(signal.SIGUSR1)
    # The children write no more: only the reopen can bring the files back.
    for log in logs.values():
        wait_for(log.exists, timeout=5, what=f"{log.name} reopened")
        assert log.read_bytes() == b""
    held = open_files(daemon.process.pid)
    assert not [path for path in held if path.endswith(".log.1")], held
    assert daemon.ok("status", name="a")["status"] == "active"


def test_a_new_stream_for_a_running_watcher_lets_go_of_the_old_file(
    start_daemon, workdir
):
    old, new = workdir / "old.log", workdir / "new.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'i=0; while :; do i=$((i+1)); echo line$i; sleep 0.05; done'
        stdout_stream.class = FileStream
        stdout_stream.filename = {old}
        """)
    wait_for(lambda: old.exists() and numbers(old), what="first lines")
    daemon.ok("set", name="w", options={"stdout_stream.filename": str(new)},
              waiting=True)  # fmt: skip
    wait_for(lambda: new.exists() and numbers(new), what="lines in the new file")
    assert str(old) not in open_files(daemon.process.pid)
    assert not growing(old)
    assert numbers(new)[0] == 1  # a new process, from its first line


# -- B18 -------------------------------------------------------------------------


def test_files_get_the_childs_bytes_and_text_views_replace_what_is_not_utf8(
    start_daemon, workdir
):
    log = workdir / "b18.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {PYTHON} {PROGRAMS}/bytes_out.py
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        stderr_stream.class = FancyStdoutStream
        """)
    pid = daemon.pids("w")[0]
    wait_for(lambda: f"[w:{pid}] AFTER" in daemon.output(), what="AFTER")
    assert log.read_bytes() == B18 + b"AFTER\n"
    shown = re.findall(rf"\[w:{pid}\] (.*)", daemon.output())
    assert shown == [
        "\ufffd\ufffd",
        "a" * 1022,  # held longer than a second: written unfinished ...
        "é",  # ... and the é, cut in two by the reads, is whole
        "日本語",
        "\ufffdtail",
        "AFTER",
    ]
    started = time.monotonic()
    daemon.ok("stop", name="w", waiting=True)
    assert time.monotonic() - started < 1.0


def test_circusds_own_stdout_unread_blocks_neither_children_nor_daemon(
    start_daemon, workdir
):
    """StdoutStream writes to circusd's stdout, which nobody reads here: the
    child still writes its 4 MB and goes on, circusd answers, the excess is
    dropped with one log line, and a stop does not hang on it."""
    done = workdir / "done"
    read_end, write_end = os.pipe()
    try:
        daemon = start_daemon(
            f"""
            [watcher:loud]
            cmd = sh -c 'head -c 4000000 /dev/zero; touch {done}; exec sleep 300'
            stdout_stream.class = StdoutStream

            [watcher:quiet]
            cmd = sleep 300
            """,
            stdout=write_end,
        )
        os.close(write_end)
        wait_for(done.exists, timeout=10, what="the child")
        assert daemon.ok("status", name="quiet")["status"] == "active"
        assert "output dropped fd=1" in daemon.output()
        started = time.monotonic()
        daemon.process.terminate()
        assert daemon.process.wait(10) == 0
        assert time.monotonic() - started < 6
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.close(write_end)


# -- B20 -------------------------------------------------------------------------


def test_a_child_that_closes_its_output_costs_the_daemon_nothing(start_daemon, workdir):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'exec >&- 2>&-; exec sleep 300'
        numprocesses = 5
        stdout_stream.class = FileStream
        stdout_stream.filename = {workdir}/b20.log
        stderr_stream.class = FileStream
        stderr_stream.filename = {workdir}/b20.err
        """)
    pid = daemon.process.pid
    wait_for(lambda: len(daemon.pids("w")) == 5, what="five processes")
    time.sleep(1.0)
    fds, cpu = len(open_files(pid)), cpu_seconds(pid)
    time.sleep(5.0)
    assert cpu_seconds(pid) - cpu < 0.3
    assert len(open_files(pid)) == fds
    # The ten pipes reached their end and were closed, once each.
    assert not [path for path in open_files(pid) if path.startswith("pipe:")]
    assert daemon.ok("status", name="w")["status"] == "active"


# -- a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path = workdir / "disk"
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", path], check=True
    )
    yield path
    subprocess.run(["umount", "--lazy", path], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def beat(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(path.read_text())
    return 0


@pytest.mark.root
def test_a_full_disk_drops_output_without_blocking_the_child(
    start_daemon, workdir, small_disk
):
    log, heartbeat = small_disk / "out.log", workdir / "beat"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {PYTHON} {PROGRAMS}/steady_writer.py {heartbeat}
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        """)
    writer = daemon.pids("w")[0]
    wait_for(lambda: log.exists() and log.stat().st_size > 0, what="output")
    filler = fill(small_disk)
    wait_for(lambda: "cannot write output" in daemon.output(), what="the failure")

    # The pipe (64 KiB) would be full within a second if circusd stopped
    # reading: the child goes on writing about 1000 lines a second.
    before = beat(heartbeat)
    time.sleep(2.0)
    assert beat(heartbeat) > before + 500
    assert daemon.pids("w") == [writer]
    assert daemon.output().count("cannot write output") == 1

    filler.unlink()
    found = wait_for(
        lambda: re.search(r"output file works again .*dropped_bytes=(\d+)",
                          daemon.output()),
        what="writing to resume",
    )  # fmt: skip
    dropped = int(found.group(1))
    assert dropped > 0
    daemon.ok("stop", name="w", waiting=True)
    # Every byte the child wrote is in the file or was counted as dropped.
    last = int(log.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1][:8])
    assert log.stat().st_size + dropped == last * LINE
    assert daemon.output().count("cannot write output") == 1


# -- many processes -----------------------------------------------------------------


def test_each_process_costs_two_descriptors_for_its_two_streams(start_daemon, workdir):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 300
        stdout_stream.class = FileStream
        stdout_stream.filename = {workdir}/out.log
        stderr_stream.class = FileStream
        stderr_stream.filename = {workdir}/err.log
        """)
    pid = daemon.process.pid
    wait_for(lambda: len(daemon.pids("w")) == 300, timeout=30, what="300 processes")
    files = open_files(pid)
    pipes = [path for path in files if path.startswith("pipe:")]
    print(f"\ncircusd descriptors with 300 processes: {len(files)}, pipes among them "
          f"{len(pipes)}, limit {soft_nofile(pid)}")  # fmt: skip
    assert len(pipes) == 600  # one per captured stream of each process
    assert len(files) - len(pipes) < 40  # endpoints, files, the event loop
    assert len(files) < soft_nofile(pid) * 3 // 4
    daemon.ok("decr", name="w", nb=300, waiting=True)
    assert not [path for path in open_files(pid) if path.startswith("pipe:")]


@pytest.fixture
def low_nofile() -> Iterator[int]:
    """A soft open-files limit of 256 for the daemon started next (it is
    inherited); the test's own is restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    yield 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_daemon_raises_its_soft_open_files_limit_when_it_runs_short(
    low_nofile, start_daemon, workdir
):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300
        numprocesses = 200
        stdout_stream.class = FileStream
        stdout_stream.filename = {workdir}/out.log
        stderr_stream.class = FileStream
        stderr_stream.filename = {workdir}/err.log
        """)
    wait_for(lambda: len(daemon.pids("w")) == 200, timeout=30, what="200 processes")
    pid = daemon.process.pid
    assert len(open_files(pid)) > low_nofile
    assert soft_nofile(pid) > len(open_files(pid))
    assert "raised the open files limit" in daemon.output()
    assert "spawn failed" not in daemon.output()


# -- a class of one's own -----------------------------------------------------------

COLLECTOR = """
import json


class Collector:
    def __init__(self, path, tag):
        self.path, self.tag = path, tag
        self.open()

    def open(self):
        self.file = open(self.path, "a")

    def __call__(self, data):
        record = {"pid": data["pid"], "name": data["name"], "tag": self.tag,
                  "data": data["data"].decode()}
        self.file.write(json.dumps(record) + "\\n")
        self.file.flush()

    def close(self):
        self.file.write("closed\\n")
        self.file.close()
"""


def test_a_custom_stream_class_from_the_config_file_gets_every_chunk(
    start_daemon, workdir
):
    (workdir / "collector.py").write_text(COLLECTOR)
    collected = workdir / "collected"
    daemon = start_daemon(
        f"""
        [watcher:w]
        cmd = sh -c 'echo hello; echo oops >&2; exec sleep 300'
        stdout_stream.class = collector.Collector
        stdout_stream.path = {collected}
        stdout_stream.tag = out
        stderr_stream.class = collector.Collector
        stderr_stream.path = {collected}
        stderr_stream.tag = err
        """,
        env={"PYTHONPATH": str(workdir)},
    )
    pid = daemon.pids("w")[0]
    wait_for(lambda: collected.exists() and collected.read_text().count("\n") == 2,
             what="two chunks")  # fmt: skip
    records = sorted(collected.read_text().splitlines())
    assert records == [
        f'{{"pid": {pid}, "name": "stderr", "tag": "err", "data": "oops\\n"}}',
        f'{{"pid": {pid}, "name": "stdout", "tag": "out", "data": "hello\\n"}}',
    ]
    daemon.ok("stop", name="w", waiting=True)
    assert collected.read_text().count("closed\n") == 2
