"""Attacks on circusd._spawn and its caller: hostile values from config files
and from the endpoint owner's `add`/`set`, descriptors that must not leak,
identities that must be whole, and failures that must leave circusd up."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from circusd.errors import SpawnError
from circusd.process import _resolve_program
from circusd.users import KEEP, Identity
from tests.conftest import CIRCUSD, READY_TIMEOUT, ServiceUser, call, wait_for
from tests.security.conftest import circusd_as_user, proc_status

pytestmark = pytest.mark.root


def open_pipes(pid: int) -> int:
    """Pipes only: circusd's sockets and /proc files come and go with the
    requests and samples a test makes, its pipes with the children."""
    folder = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(folder):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"{folder}/{fd}").startswith("pipe:")
    return count


def test_values_execve_cannot_take_fail_by_name_and_leak_nothing(start_daemon, workdir):
    """A command, env value or working_dir that cannot be encoded for
    execve (a lone surrogate, which JSON can carry in `add`) fails the
    watcher with the value named, in one line, and the pipes made for the
    child's output are closed again, however often it retries."""

    def add(name: str, cmd: str, **options: object) -> None:
        daemon.ok(
            "add",
            name=name,
            cmd=cmd,
            start=True,
            options={
                "max_retry": 3,
                "stdout_stream.class": "FileStream",
                "stdout_stream.filename": str(workdir / f"{name}.out"),
                "stderr_stream.class": "FileStream",
                "stderr_stream.filename": str(workdir / f"{name}.err"),
                **options,
            },
        )

    def failed(name: str) -> str:
        status = wait_for(
            lambda: (s := daemon.ok("status", name=name))["status"] == "failed" and s,
            timeout=30,
            what=f"watcher {name} to fail",
        )
        return str(status["reason"])

    daemon = start_daemon("""
        [watcher:plain]
        cmd = sleep 300
        """)
    add("missing", str(workdir / "missing"))  # the same streams, failing late
    assert "No such file or directory" in failed("missing")
    baseline = open_pipes(daemon.process.pid)
    add("arg", "sleep \ud800")
    add("env", "sleep 300", env={"BAD": "x\udcff\ud800"})
    add("cwd", "sleep 300", working_dir=str(workdir / "d\ud800"))
    reasons = {name: failed(name) for name in ("arg", "env", "cwd")}
    assert "argument 1" in reasons["arg"]
    assert "env BAD" in reasons["env"]
    assert "working_dir" in reasons["cwd"]
    for reason in reasons.values():
        assert "surrogates not allowed" in reason and "\n" not in reason
    assert open_pipes(daemon.process.pid) <= baseline
    assert len(daemon.pids("plain")) == 1


def test_command_missing_from_path_never_runs_a_file_of_the_working_dir(
    start_daemon, workdir
):
    """A bare command name is looked up in PATH only, as execvp does: when
    PATH has no such program, a file of that name in the working directory
    (which its owner may have planted there) must not run, least of all as
    root."""
    uploads = workdir / "uploads"
    uploads.mkdir()
    uploads.chmod(0o1777)
    marker = workdir / "planted-ran"
    planted = uploads / "cd-backup-tool"
    planted.write_text(f"#!/bin/sh\nid -u > {marker}\nexec sleep 300\n")
    planted.chmod(0o755)
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = cd-backup-tool --now
        working_dir = {uploads}
        max_retry = 0

        [watcher:plain]
        cmd = sleep 300
        """)
    wait_for(
        lambda: marker.exists() or daemon.ok("status", name="w").get("reason"),
        what="the planted file to run or the watcher to fail",
    )
    assert not marker.exists(), f"ran {planted} as uid {marker.read_text()}"
    reason = daemon.ok("status", name="w")["reason"]
    assert daemon.pids("w") == []
    assert "cannot execute cd-backup-tool" in reason and "PATH" in reason, reason
    assert len(daemon.pids("plain")) == 1


def test_rlimit_beyond_64_bits_is_refused_not_wrapped(start_daemon, workdir):
    """2**64 + 1 is no limit a kernel knows: it must be refused, not passed
    on modulo 2**64 (which gave the child a core limit of 1)."""
    daemon = start_daemon("""
        [watcher:plain]
        cmd = sleep 300
        """)
    huge = str(2**64 + 1)
    reply = daemon.call(
        "add", name="w", cmd="sleep 300", start=True, options={"rlimit_core": huge}
    )
    pids = daemon.pids("w") if reply["status"] == "ok" else []
    core = [
        line
        for pid in pids
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
        if line.startswith("Max core file size")
    ]
    assert reply["status"] == "error", core
    assert "rlimit_core" in reply["reason"] and huge in reply["reason"]
    assert len(daemon.pids("plain")) == 1


def test_daemon_that_is_not_root_names_the_options_it_cannot_honour(
    workdir: Path, owner: ServiceUser
):
    """circusd as an ordinary user (uid `owner` in a user namespace) starts
    plain watchers, and fails at once, with the option named, a watcher
    whose rlimit is above its own hard limit or that narrows the bounding
    set (which needs CAP_SETPCAP)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with circusd_as_user(
        workdir,
        owner,
        "nr",
        f"[watcher:limit]\ncmd = sleep 300\nrlimit_nofile = 64:{hard + 1}\n\n"
        "[watcher:caps]\ncmd = sleep 300\ncapability_bounding_set = kill\n\n"
        "[watcher:lower]\ncmd = sleep 300\nrlimit_nofile = 64:128\n\n"
        "[watcher:plain]\ncmd = sleep 300\n",
    ) as endpoint:

        def failed(name: str) -> str:
            status = wait_for(
                lambda: (
                    (s := call(endpoint, "status", name=name))["status"] == "failed"
                    and s
                ),
                timeout=3,
                what=f"watcher {name} to fail at once",
            )
            return str(status["reason"])

        limit = failed("limit")
        assert "rlimit_nofile" in limit and str(hard + 1) in limit, limit
        assert "attempts" not in limit, limit
        caps = failed("caps")
        assert "capability_bounding_set" in caps and "CAP_SETPCAP" in caps, caps
        for name in ("plain", "lower"):
            assert call(endpoint, "status", name=name)["status"] == "active"
            assert len(call(endpoint, "list", name=name)["pids"]) == 1


PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


def test_clone_refused_by_a_pids_limit_fails_the_spawn_and_nothing_else(
    start_daemon, workdir
):
    """With circusd in a pids cgroup that is full, clone fails with EAGAIN:
    the spawn fails with that reason in one line, circusd keeps answering,
    the running watcher keeps its process, and once the limit is lifted the
    watcher starts."""
    if not (PIDS_CGROUP / "cgroup.procs").exists():
        pytest.skip("a cgroup v1 pids hierarchy is needed")
    daemon = start_daemon("""
        [watcher:plain]
        cmd = sleep 300

        [watcher:w]
        cmd = sleep 300
        autostart = false
        max_retry = -1
        """)
    plain = daemon.pids("plain")
    group = PIDS_CGROUP / f"cdspawn{os.getpid()}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(daemon.process.pid))
        (group / "pids.max").write_text((group / "pids.current").read_text())
        daemon.ok("start", name="w")
        reason = wait_for(
            lambda: daemon.ok("status", name="w").get("reason"), what="the failure"
        )
        assert reason.startswith(
            "cannot create a process (clone): Resource temporarily unavailable"
        ), reason
        assert daemon.pids("w") == []
        assert daemon.pids("plain") == plain
        assert all(os.path.exists(f"/proc/{pid}") for pid in plain)
        (group / "pids.max").write_text("max")
        wait_for(lambda: daemon.pids("w"), timeout=15, what="w to start")
    finally:
        (PIDS_CGROUP / "cgroup.procs").write_text(str(daemon.process.pid))
        daemon.stop()
        group.rmdir()


_ITERATOR_SPAWN = """
import os
from circusd import _spawn

read_end, write_end = os.pipe()
words = [bytes([0x61 + i]) * 40 for i in range(3)]
expected = b" ".join(words) + b"\\n"
pid = _spawn.spawn(
    b"/bin/echo",
    (bytes(bytearray(w)) for w in [b"echo", *words]),  # new objects, owned by no one
    (b"X=" + bytes(40) .replace(b"\\0", b"y") for _ in range(1)),
    b"/", [-1, write_end, -1], [], -1, [], [], None, -1, -1, False, 0,
)
os.close(write_end)
got = os.read(read_end, 4096)
os.waitpid(pid, 0)
print("same" if got == expected else f"different: {got!r}")
"""


def test_spawn_keeps_argv_and_envp_alive_when_given_iterators(tmp_path):
    """_spawn.spawn takes any iterable: the bytes it passes to execve must
    stay alive until the exec, even when only the iterable's list held them
    (with PYTHONMALLOC=debug, freed memory is overwritten and shows)."""
    result = subprocess.run(
        [sys.executable, "-c", _ITERATOR_SPAWN],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONMALLOC": "debug"},
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "same", (result.stdout, result.stderr)


def _launch(
    workdir: Path, ini: str, *, cwd: Path, shell_redirects: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """circusd from ``sh -c 'exec circusd CONFIG REDIRECTS'`` in ``cwd``; its
    control endpoint once it answers."""
    endpoint = f"ipc://{workdir}/l.sock"
    config = workdir / "l.ini"
    config.write_text(
        f"[circus]\nendpoint = {endpoint}\n"
        f"pubsub_endpoint = ipc://{workdir}/lpub.sock\n\n{ini}"
    )
    command = " ".join([*CIRCUSD, str(config), "--log-output", str(workdir / "l.log")])
    process = subprocess.Popen(
        ["sh", "-c", f"exec {command} {shell_redirects}"],
        cwd=cwd,
        start_new_session=True,
    )
    wait_for(lambda: (workdir / "l.sock").exists(), READY_TIMEOUT)
    wait_for(
        lambda: "started watchers=" in (workdir / "l.log").read_text(),
        what="watchers to start",
    )
    return process, endpoint


def _end(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(10)


def test_removed_circusd_directory_is_named_in_the_reason(workdir: Path):
    """A watcher without working_dir starts in circusd's own directory; when
    that directory was removed, the reason says so instead of a bare
    '[Errno 2] No such file or directory'."""
    home = workdir / "home"
    home.mkdir()
    process, endpoint = _launch(
        workdir,
        "[watcher:w]\ncmd = sleep 300\nautostart = false\nmax_retry = 0\n\n"
        "[watcher:plain]\ncmd = sleep 300\n",
        cwd=home,
    )
    try:
        home.rmdir()
        call(endpoint, "start", name="w")
        status = wait_for(
            lambda: (s := call(endpoint, "status", name="w")).get("reason") and s,
            what="the failure",
        )
        assert "circusd's directory" in status["reason"], status
        assert "removed" in status["reason"], status
        assert call(endpoint, "status", name="plain")["status"] == "active"
    finally:
        _end(process)


def test_children_get_open_stdio_when_circusd_started_without_it(workdir: Path):
    """circusd started with 0, 1 and 2 closed: the files it opens first take
    those numbers, and a child that keeps circusd's stdout would get one of
    them or nothing. Every child still starts with 0, 1 and 2 open, none of
    them one of circusd's own files."""
    process, endpoint = _launch(
        workdir,
        "[watcher:w]\ncmd = sleep 300\n",
        cwd=workdir,
        shell_redirects="<&- >&- 2>&-",
    )
    try:
        pid = call(endpoint, "list", name="w")["pids"][0]
        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}")
               for fd in os.listdir(f"/proc/{pid}/fd")}  # fmt: skip
        assert fds == dict.fromkeys((0, 1, 2), "/dev/null"), fds
        assert call(endpoint, "status", name="w")["status"] == "active"
    finally:
        _end(process)


def test_children_never_hold_circusds_descriptors_under_churn(start_daemon, workdir):
    """Many watchers respawning at once, with captured output, a shared
    socket and a reloadconfig in the middle: every child holds 0, 1, 2 and
    the socket its command names, nothing of circusd's (control and event
    sockets, epoll, other watchers' pipes, the failure pipe)."""
    watchers = "".join(
        f"""
        [watcher:w{i}]
        cmd = sleep 0.{i + 2}
        numprocesses = 3
        max_retry = -1
        stdout_stream.class = FileStream
        stdout_stream.filename = {workdir}/w{i}.out
        stderr_stream.class = FileStream
        stderr_stream.filename = {workdir}/w{i}.err
        """
        for i in range(6)
    )
    daemon = start_daemon(f"""
        [watcher:web]
        cmd = sleep 300 $(circus.sockets.web)
        numprocesses = 2

        [socket:web]
        host = 127.0.0.1
        port = 0
        {watchers}
        """)
    web = daemon.pids("web")
    socket_fd = int(Path(f"/proc/{web[0]}/cmdline").read_bytes().split(b"\0")[2])
    seen = whole = 0
    deadline = time.monotonic() + 4
    reloaded = False
    while time.monotonic() < deadline:
        if not reloaded and time.monotonic() > deadline - 2:
            daemon.ok("reloadconfig")
            reloaded = True
        for child in psutil.Process(daemon.process.pid).children():
            try:
                fds = {int(fd): os.readlink(f"/proc/{child.pid}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{child.pid}/fd")}  # fmt: skip
                name = child.name()
            except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
                continue
            if name != "sleep":
                continue  # not yet exec'd: circusd's own descriptors still
            expected = {0, 1, 2, socket_fd} if child.pid in web else {0, 1, 2}
            # Only a subset while sleep exits (it closes its stdout itself).
            assert set(fds) <= expected, (child.pid, fds)
            seen += 1
            whole += set(fds) == expected
    assert seen > 50 and whole > seen / 2, (seen, whole)
    assert daemon.pids("web") == web


def test_uid_without_passwd_entry_and_root_with_a_group_are_exact(
    start_daemon, owner: ServiceUser
):
    """A numeric uid unknown to passwd (with its gid) and uid 0 with another
    gid: each child holds exactly those ids, and exactly the groups named,
    never circusd's."""
    daemon = start_daemon(f"""
        [watcher:ghost]
        cmd = sleep 300
        uid = 4000123
        gid = {owner.extra_gid}

        [watcher:root]
        cmd = sleep 300
        uid = 0
        gid = {owner.extra_group}
        """)
    ghost = proc_status(daemon.pids("ghost")[0])
    assert ghost["Uid"].split() == ["4000123"] * 4
    assert ghost["Gid"].split() == [str(owner.extra_gid)] * 4
    assert ghost["Groups"].split() == [str(owner.extra_gid)]
    root = proc_status(daemon.pids("root")[0])
    assert root["Uid"].split() == ["0"] * 4
    assert root["Gid"].split() == [str(owner.extra_gid)] * 4
    expected = sorted(set(os.getgrouplist("root", owner.extra_gid)))
    assert sorted(map(int, root["Groups"].split())) == expected


def test_spawn_reports_a_bad_descriptor_to_keep_even_the_highest():
    """A descriptor to keep that is not open fails the spawn with its step,
    also at INT_MAX (where 'one above' overflowed and the failure pipe was
    closed before the child could report on it: a dead child came back as
    started)."""
    from circusd import _spawn

    for fd in (1000, 2**31 - 1):
        with pytest.raises((OSError, ValueError)) as failure:
            pid = _spawn.spawn(
                b"/bin/true", [b"true"], [], b"/", [-1, -1, -1], [fd],
                -1, [], [], None, -1, -1, False, 0,
            )  # fmt: skip
            os.waitpid(pid, 0)
        assert "close_fds" in str(failure.value) or "keep_fds" in str(failure.value)


_IGNORE_INTERNAL_SIGNALS = """#!{python}
# Ignore signals 32 and 33 (glibc keeps them for itself, so only the raw
# system call reaches them, as some launchers do), then become circusd.
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
act = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # handler SIG_IGN, flags, restorer, mask
for sig in (32, 33):
    assert libc.syscall(13, sig, act, None, 8) == 0, ctypes.get_errno()
os.execv({python!r}, [{python!r}, *sys.argv[1:]])
"""


def test_signals_glibc_reserves_are_not_left_ignored_in_children(start_daemon, workdir):
    """circusd started with signals 32 and 33 ignored (`make` starts its
    commands that way): children get every disposition back to default,
    these two included, which glibc's sigaction() will not touch."""
    if os.uname().machine != "x86_64":
        pytest.skip("the launcher uses x86_64's rt_sigaction number")
    launcher = workdir / "ignoring-python"
    launcher.write_text(_IGNORE_INTERNAL_SIGNALS.format(python=sys.executable))
    launcher.chmod(0o755)
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300
        """,
        python=str(launcher),
    )
    assert proc_status(daemon.process.pid)["SigIgn"] != "0" * 16
    status = proc_status(daemon.pids("w")[0])
    assert (status["SigIgn"], status["SigBlk"]) == ("0" * 16, "0" * 16)


def test_path_search_skips_empty_and_relative_entries(tmp_path, monkeypatch):
    """An empty PATH entry or a relative one means "the working directory"
    to execvp: the child's, which its owner may fill. They are skipped."""
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    for path in (":/nonexistent", ".:/nonexistent", "./:/nonexistent"):
        with pytest.raises(SpawnError, match="not found in PATH"):
            _resolve_program(["tool"], {"PATH": path}, None, KEEP)


def test_path_search_finds_what_the_user_may_execute(tmp_path, test_user):
    """As execvp does for the user, not as root would: a program in an
    earlier PATH directory that only root may execute is passed over."""
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, mode in ((first, 0o700), (second, 0o755)):
        directory.mkdir(mode=0o755)
        program = directory / "tool"
        program.write_text("#!/bin/sh\n")
        program.chmod(mode)
    user = Identity(test_user.uid, test_user.gid, (test_user.gid,))
    env = {"PATH": f"{first}:{second}"}
    assert _resolve_program(["tool"], env, None, user) == str(second / "tool")
    assert _resolve_program(["tool"], env, None, KEEP) == str(first / "tool")
