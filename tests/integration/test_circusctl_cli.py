"""The real circusctl console script against a real daemon.

Every test runs against circusd's own daemon and against Circus 0.19's (from
.peers/circus, built by ``make peers``), so our client is known to work with
both. Everything that knows which daemon runs is in ``_run_peer``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from circusd.client import CircusClient, DaemonUnreachable, ReplyError

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = Path(sys.executable).with_name("circusctl")
CIRCUS_DAEMON = Path(__file__).resolve().parents[2] / ".peers/circus/bin/circusd"
PEER_COMMANDS = {
    "circus": [str(CIRCUS_DAEMON)],
    "circusd": [sys.executable, "-m", "circusd.cli.daemon"],
}

CATCHER = """\
import os, signal, sys
out = sys.argv[1]
def note(signum, frame):
    with open(out, "a") as f:
        f.write(f"{os.getpid()} {signum}\\n")
signal.signal(signal.SIGUSR1, note)
with open(out, "a") as f:
    f.write(f"{os.getpid()} ready\\n")
while True:
    signal.pause()
"""


@dataclass
class Peer:
    """A running daemon and where to reach it."""

    directory: Path
    endpoint: str
    pubsub_endpoint: str
    process: subprocess.Popen[bytes]
    children: set[psutil.Process] = field(default_factory=set)

    @property
    def signals_file(self) -> Path:
        return self.directory / "signals.txt"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def circusctl(
    *args: str,
    endpoint: str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 20,
) -> Result:
    """Run the installed console script; ``endpoint`` goes in CIRCUSCTL_ENDPOINT."""
    env = dict(os.environ)
    env.pop("CIRCUSCTL_ENDPOINT", None)
    if endpoint is not None:
        env["CIRCUSCTL_ENDPOINT"] = endpoint
    started = time.monotonic()
    completed = subprocess.run(
        [str(CIRCUSCTL), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(
        completed.returncode,
        completed.stdout,
        completed.stderr,
        time.monotonic() - started,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _config(directory: Path) -> str:
    return f"""\
[circus]
endpoint = ipc://{directory}/ctl.sock
pubsub_endpoint = ipc://{directory}/pub.sock
multicast_endpoint =
check_delay = 0.5

[watcher:sleeper]
cmd = sleep 600
numprocesses = 2
graceful_timeout = 2

[watcher:scaled]
cmd = sleep 600
numprocesses = 1
graceful_timeout = 2

[watcher:catcher]
cmd = {sys.executable} {directory}/catcher.py {directory}/signals.txt
graceful_timeout = 2

[socket:web]
host = 127.0.0.1
port = 0
"""


def _answers(endpoint: str, expected_processes: int) -> bool:
    try:
        with CircusClient(endpoint, timeout=0.5) as client:
            reply = client.call("numprocesses")
    except (DaemonUnreachable, ReplyError):
        return False
    return reply.get("numprocesses") == expected_processes


@contextlib.contextmanager
def _run_peer(directory: Path, kind: str) -> Iterator[Peer]:
    """Start the daemon under test in ``directory``; stop it and its children."""
    if kind == "circus" and not CIRCUS_DAEMON.exists():
        pytest.skip(f"Circus 0.19 is not installed at {CIRCUS_DAEMON}: make peers")
    (directory / "catcher.py").write_text(CATCHER)
    config = directory / "circus.ini"
    config.write_text(_config(directory))
    log = (directory / "daemon.log").open("wb")
    process = subprocess.Popen(
        [*PEER_COMMANDS[kind], str(config)],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    peer = Peer(
        directory, f"ipc://{directory}/ctl.sock", f"ipc://{directory}/pub.sock", process
    )
    try:
        wait_for(
            lambda: process.poll() is not None or _answers(peer.endpoint, 4),
            "the daemon to start its watchers",
            timeout=20,
        )
        assert process.poll() is None, (directory / "daemon.log").read_text()
        wait_for(
            lambda: (
                peer.signals_file.exists() and "ready" in peer.signals_file.read_text()
            ),
            "the signal catcher",
        )
        peer.children.update(_descendants(process))
        yield peer
    finally:
        peer.children.update(_descendants(process))
        _stop(process, peer.children)
        log.close()


def _descendants(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop(process: subprocess.Popen[bytes], descendants: set[psutil.Process]) -> None:
    """End the daemon, then any process it started that outlived it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    for child in descendants:  # children live in their own sessions
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()  # psutil checks it is still the same process


@pytest.fixture(scope="module", params=["circusd", "circus"])
def peer_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def circus_peer(
    tmp_path_factory: pytest.TempPathFactory, peer_kind: str
) -> Iterator[Peer]:
    """A daemon shared by the tests of this module; tests leave it as they found it."""
    with _run_peer(tmp_path_factory.mktemp("peer"), peer_kind) as peer:
        yield peer


@pytest.fixture
def own_peer(
    tmp_path_factory: pytest.TempPathFactory, peer_kind: str
) -> Iterator[Peer]:
    """A daemon for one test that stops, pauses or kills it."""
    with _run_peer(tmp_path_factory.mktemp("own"), peer_kind) as peer:
        yield peer


def pids(peer: Peer, watcher: str) -> list[int]:
    with CircusClient(peer.endpoint) as client:
        return list(client.call("list", name=watcher)["pids"])


# --- success, output modes ---------------------------------------------------


def test_status_prints_a_table_with_process_counts(circus_peer: Peer) -> None:
    result = circusctl("status", endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    assert result.lines[0].split() == ["WATCHER", "STATUS", "PROCESSES", "REASON"]
    rows = {line.split()[0]: line.split()[1:] for line in result.lines[1:]}
    assert rows == {
        "catcher": ["active", "1"],
        "scaled": ["active", "1"],
        "sleeper": ["active", "2"],
    }


def test_status_json_prints_the_raw_reply(circus_peer: Peer) -> None:
    result = circusctl("--json", "status", endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == "ok"
    assert reply["statuses"]["sleeper"] == "active"


def test_prettify_indents_the_json(circus_peer: Peer) -> None:
    result = circusctl("--prettify", "numwatchers", endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('{\n  "status": "ok"')
    assert json.loads(result.stdout)["numwatchers"] == 3


def test_status_of_one_watcher_prints_its_status_word(circus_peer: Peer) -> None:
    result = circusctl("status", "sleeper", endpoint=circus_peer.endpoint)

    assert (result.returncode, result.stdout) == (0, "active\n")


def test_endpoint_option_overrides_the_environment(circus_peer: Peer) -> None:
    result = circusctl(
        "--endpoint", circus_peer.endpoint, "numwatchers", endpoint="ipc:///nowhere"
    )

    assert (result.returncode, result.stdout) == (0, "3\n")


def test_list_prints_watchers_and_pids_one_per_line(circus_peer: Peer) -> None:
    watchers = circusctl("list", endpoint=circus_peer.endpoint)
    sleeper = circusctl("list", "sleeper", endpoint=circus_peer.endpoint)

    assert watchers.lines == ["catcher", "scaled", "sleeper"]
    assert sorted(int(pid) for pid in sleeper.lines) == sorted(
        pids(circus_peer, "sleeper")
    )


def test_numprocesses_counts_one_watcher_or_all(circus_peer: Peer) -> None:
    one = circusctl("numprocesses", "sleeper", endpoint=circus_peer.endpoint)
    every = circusctl("numprocesses", endpoint=circus_peer.endpoint)

    assert (one.stdout, every.stdout) == ("2\n", "4\n")


def test_stats_prints_a_row_per_process(circus_peer: Peer) -> None:
    result = circusctl("stats", "sleeper", endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    assert result.lines[0].split()[:3] == ["WATCHER", "PID", "WID"]
    listed = sorted(int(line.split()[1]) for line in result.lines[1:])
    assert listed == sorted(pids(circus_peer, "sleeper"))
    assert all(line.split()[-1] == "sleep" for line in result.lines[1:])


def test_stats_of_one_process(circus_peer: Peer) -> None:
    pid = pids(circus_peer, "sleeper")[0]
    result = circusctl("stats", "sleeper", str(pid), endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    assert [line.split()[:2] for line in result.lines[1:]] == [["sleeper", str(pid)]]


def test_listsockets_prints_the_socket_table(circus_peer: Peer) -> None:
    result = circusctl("listsockets", endpoint=circus_peer.endpoint)

    assert result.returncode == 0, result.stderr
    assert result.lines[0].split() == ["NAME", "FD", "ADDRESS", "BACKLOG"]
    name, fd, address, backlog = result.lines[1].split()
    assert (name, backlog) == ("web", "2048")
    assert fd.isdigit()
    assert address.startswith("127.0.0.1:")


def test_get_and_options_print_key_value_lines(circus_peer: Peer) -> None:
    got = circusctl(
        "get", "sleeper", "numprocesses", "cmd", endpoint=circus_peer.endpoint
    )
    every = circusctl("options", "sleeper", endpoint=circus_peer.endpoint)

    assert got.lines == ["cmd          = sleep 600", "numprocesses = 2"]
    assert "graceful_timeout = 2.0" in [" ".join(line.split()) for line in every.lines]


def test_globaloptions_and_dstats(circus_peer: Peer) -> None:
    pubsub = circusctl(
        "globaloptions", "pubsub_endpoint", endpoint=circus_peer.endpoint
    )
    daemon = circusctl("dstats", endpoint=circus_peer.endpoint)

    assert pubsub.lines == [f"pubsub_endpoint = {circus_peer.pubsub_endpoint}"]
    fields = {
        key.strip(): value
        for key, value in (line.split(" = ", 1) for line in daemon.lines)
    }
    assert int(fields["pid"]) == circus_peer.process.pid


def test_incr_and_decr_change_the_number_of_processes(circus_peer: Peer) -> None:
    up = circusctl("incr", "scaled", "2", "--waiting", endpoint=circus_peer.endpoint)
    down = circusctl("decr", "scaled", "--waiting", endpoint=circus_peer.endpoint)
    back = circusctl("decr", "scaled", "--waiting", endpoint=circus_peer.endpoint)

    assert (up.returncode, up.stdout) == (0, "3\n"), up.stderr
    assert (down.returncode, down.stdout) == (0, "2\n")
    assert (back.returncode, back.stdout) == (0, "1\n")
    assert len(pids(circus_peer, "scaled")) == 1


def test_set_converts_values_by_option_type(circus_peer: Peer) -> None:
    changed = circusctl(
        "set", "scaled", "graceful_timeout", "3", "env", "A=1,B=2",
        "max_age", "0", "--waiting", endpoint=circus_peer.endpoint,
    )  # fmt: skip
    got = circusctl(
        "--json", "get", "scaled", "graceful_timeout", "env", "max_age",
        endpoint=circus_peer.endpoint,
    )  # fmt: skip
    restored = circusctl(
        "set", "scaled", "graceful_timeout", "2", "env", "", "--waiting",
        endpoint=circus_peer.endpoint,
    )  # fmt: skip

    assert (changed.returncode, changed.stdout) == (0, "ok\n"), changed.stderr
    assert json.loads(got.stdout)["options"] == {
        "graceful_timeout": 3.0,
        "env": {"A": "1", "B": "2"},
        "max_age": 0,
    }
    assert restored.returncode == 0, restored.stderr


def test_set_with_a_value_of_the_wrong_type_is_a_usage_error(circus_peer: Peer) -> None:
    result = circusctl(
        "set", "scaled", "numprocesses", "many", endpoint=circus_peer.endpoint
    )

    assert result.returncode == 2
    assert result.stderr.startswith("circusctl: error: invalid value for numprocesses")


def test_signal_reaches_the_processes_of_a_watcher(circus_peer: Peer) -> None:
    pid = pids(circus_peer, "catcher")[0]
    by_name = circusctl("signal", "catcher", "USR1", endpoint=circus_peer.endpoint)
    by_pid = circusctl(
        "signal", "catcher", str(pid), "SIGUSR1", endpoint=circus_peer.endpoint
    )

    assert (by_name.returncode, by_pid.returncode) == (0, 0), by_name.stderr
    expected = f"{pid} {int(signal.SIGUSR1)}"
    wait_for(
        lambda: circus_peer.signals_file.read_text().splitlines().count(expected) == 2,
        "two SIGUSR1 notes from the catcher",
    )


def test_unknown_signal_name_is_a_usage_error(circus_peer: Peer) -> None:
    result = circusctl("signal", "catcher", "SIGNOPE", endpoint=circus_peer.endpoint)

    assert result.returncode == 2
    assert "unknown signal 'SIGNOPE'" in result.stderr


def test_kill_one_process_replaces_it(circus_peer: Peer) -> None:
    before = pids(circus_peer, "scaled")
    result = circusctl(
        "kill", "scaled", str(before[0]), "--signum", "TERM",
        "--graceful_timeout", "1", "--waiting", endpoint=circus_peer.endpoint,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert not psutil.pid_exists(before[0]) or (
        psutil.Process(before[0]).status() == psutil.STATUS_ZOMBIE
    )
    wait_for(
        lambda: (
            len(pids(circus_peer, "scaled")) == 1
            and pids(circus_peer, "scaled") != before
        ),
        "a replacement process",
    )


def test_add_start_stop_restart_reload_and_rm(circus_peer: Peer) -> None:
    ep = circus_peer.endpoint
    added = circusctl(
        "add", "--start", "--waiting", "extra", "sleep", "600", endpoint=ep
    )
    stopped = circusctl("stop", "extra", "--waiting", endpoint=ep)
    state_stopped = circusctl("status", "extra", endpoint=ep)
    started = circusctl("start", "--match", "simple", "extra", "--waiting", endpoint=ep)
    restarted = circusctl("restart", "extra", "--waiting", endpoint=ep)
    reloaded = circusctl("reload", "extra", "--terminate", "--waiting", endpoint=ep)
    removed = circusctl("rm", "extra", "--waiting", endpoint=ep)
    gone = circusctl("status", "extra", endpoint=ep)

    assert added.returncode == 0, added.stderr
    assert added.lines[0].startswith("started: ")
    assert (stopped.returncode, state_stopped.stdout) == (0, "stopped\n")
    assert started.returncode == 0, started.stderr
    assert [line.split(":")[0] for line in restarted.lines] == [
        "stopped",
        "started",
        "kept",
    ]
    assert reloaded.returncode == 0, reloaded.stderr
    assert removed.returncode == 0, removed.stderr
    assert gone.returncode == 3


def test_listen_prints_events_and_stops_after_count(circus_peer: Peer) -> None:
    env = dict(os.environ, CIRCUSCTL_ENDPOINT=circus_peer.endpoint)
    listener = subprocess.Popen(
        [str(CIRCUSCTL), "listen", "--count", "2", "watcher.scaled."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # A subscriber misses what is published before it is connected, so
        # keep making events until it has seen enough.
        deadline = time.monotonic() + 20
        while listener.poll() is None and time.monotonic() < deadline:
            circusctl("incr", "scaled", "--waiting", endpoint=circus_peer.endpoint)
            circusctl("decr", "scaled", "--waiting", endpoint=circus_peer.endpoint)
        stdout, stderr = listener.communicate(timeout=5)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()

    assert listener.returncode == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert all(" watcher.scaled." in line for line in lines)
    assert any("process_pid=" in line for line in lines)


def test_listen_ends_cleanly_on_ctrl_c(circus_peer: Peer) -> None:
    env = dict(os.environ, CIRCUSCTL_ENDPOINT=circus_peer.endpoint)
    listener = subprocess.Popen(
        [str(CIRCUSCTL), "listen"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert listener.stderr is not None
        assert "listening on" in listener.stderr.readline()
        listener.send_signal(signal.SIGINT)
        stdout, stderr = listener.communicate(timeout=5)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()

    assert listener.returncode == 0
    assert "Traceback" not in stderr


# --- errors and exit codes ---------------------------------------------------


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_error_reply_exits_3_with_the_reason(
    circus_peer: Peer, mode: tuple[str, ...]
) -> None:
    result = circusctl(*mode, "status", "nope", endpoint=circus_peer.endpoint)

    assert result.returncode == 3
    assert result.stderr == "circusctl: error: program nope not found\n"
    if mode:
        assert json.loads(result.stdout)["errno"] == 3
    else:
        assert result.stdout == ""


@pytest.mark.parametrize("mode", [(), ("--json",)])
@pytest.mark.parametrize(
    "args",
    [
        ("bogus",),
        ("status", "a", "b"),
        ("set", "scaled", "numprocesses"),
        ("incr", "scaled", "0"),
        ("--timeout", "0", "status"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    circus_peer: Peer, mode: tuple[str, ...], args: tuple[str, ...]
) -> None:
    result = circusctl(*mode, *args, endpoint=circus_peer.endpoint)

    assert result.returncode == 2
    assert result.stderr.startswith("circusctl: error: ")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_no_command_prints_the_help(circus_peer: Peer) -> None:
    result = circusctl(endpoint=circus_peer.endpoint)

    assert result.returncode == 0
    assert "Commands:" in result.stdout
    assert "listsockets" in result.stdout


def test_version() -> None:
    result = circusctl("--version")

    assert (result.returncode, result.stdout) == (0, "circusctl (circusd) 0.1.0\n")


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_stopped_daemon_is_reported_within_the_timeout(
    own_peer: Peer, mode: tuple[str, ...]
) -> None:
    own_peer.process.terminate()
    own_peer.process.wait(10)
    result = circusctl(*mode, "--timeout", "2", "status", endpoint=own_peer.endpoint)

    assert result.returncode == 1
    assert result.elapsed < 2.5
    assert "not running or not reachable" in result.stderr
    assert own_peer.endpoint in result.stderr


def test_quit_stops_the_daemon(own_peer: Peer) -> None:
    # Without --waiting: Circus sometimes loses the reply to "quit --waiting"
    # because it closes the control socket right after sending it.
    result = circusctl("quit", endpoint=own_peer.endpoint)

    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    own_peer.process.wait(10)


def test_killed_daemon_with_a_leftover_socket_file_is_reported_at_once(
    own_peer: Peer,
) -> None:
    own_peer.process.kill()
    own_peer.process.wait(5)
    result = circusctl("--timeout", "2", "status", endpoint=own_peer.endpoint)

    assert result.returncode == 1
    assert result.elapsed < 2.5
    assert "connection refused" in result.stderr
    assert "not running or not reachable" in result.stderr


def test_hung_daemon_times_out_within_the_timeout(own_peer: Peer) -> None:
    os.kill(own_peer.process.pid, signal.SIGSTOP)
    try:
        result = circusctl("--timeout", "1", "status", endpoint=own_peer.endpoint)
    finally:
        os.kill(own_peer.process.pid, signal.SIGCONT)

    assert result.returncode == 1
    assert result.elapsed < 1.5
    assert "within 1 s" in result.stderr
    assert "not running or not reachable" in result.stderr


def test_default_tcp_endpoint_without_a_daemon_fails_fast() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    result = circusctl("--timeout", "2", "status", endpoint=f"tcp://127.0.0.1:{port}")

    assert result.returncode == 1
    assert result.elapsed < 2.5
    assert "not running or not reachable" in result.stderr


def test_relative_ipc_endpoint_is_resolved_against_the_current_directory(
    circus_peer: Peer, tmp_path: Path
) -> None:
    here = circusctl(
        "numwatchers", endpoint="ipc://ctl.sock", cwd=circus_peer.directory
    )
    elsewhere = circusctl(
        "--timeout", "2", "status", endpoint="ipc://run/ctl.sock", cwd=tmp_path
    )

    assert (here.returncode, here.stdout) == (0, "3\n"), here.stderr
    assert elsewhere.returncode == 1
    assert elsewhere.elapsed < 2.5
    assert f"{tmp_path}/run/ctl.sock" in elsewhere.stderr


def test_overlong_ipc_path_is_refused_at_once() -> None:
    path = "/run/suptest/" + "a" * 110 + ".sock"
    result = circusctl("--timeout", "2", "status", endpoint=f"ipc://{path}")

    assert result.returncode == 2
    assert result.elapsed < 1.5
    assert "107 bytes" in result.stderr
    assert path in result.stderr


# --- extra reply fields of circusd -------------------------------------------


@contextlib.contextmanager
def _answering(endpoint: str, replies: dict[str, dict[str, Any]]) -> Iterator[None]:
    """A ROUTER that answers each command with a fixed reply (plus the id)."""
    stop = threading.Event()
    ready = threading.Event()

    def serve() -> None:
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        ready.set()
        try:
            while not stop.is_set():
                if sock.poll(50):
                    peer, payload = sock.recv_multipart()
                    request = json.loads(payload)
                    key = (
                        request["command"] + ":" + request["properties"].get("name", "")
                    )
                    reply = dict(replies[key], id=request["id"])
                    sock.send_multipart([peer, json.dumps(reply).encode()])
        finally:
            sock.close(linger=0)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_status_prints_why_a_watcher_failed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # circusd adds "reasons" to status replies; Circus never sends it, so a
    # small stand-in answers here.
    endpoint = f"ipc://{tmp_path_factory.mktemp('reasons')}/ctl.sock"
    why = "exited with code 3, 5 times in 10 s"
    replies = {
        "status:": {
            "status": "ok",
            "statuses": {"web": "failed", "db": "active"},
            "reasons": {"web": why},
        },
        "status:web": {"status": "failed", "reasons": {"web": why}},
        "list:web": {"status": "ok", "pids": []},
        "list:db": {"status": "ok", "pids": [12, 13]},
    }
    with _answering(endpoint, replies):
        table = circusctl("status", endpoint=endpoint)
        single = circusctl("status", "web", endpoint=endpoint)

    assert table.returncode == 0, table.stderr
    assert table.lines == [
        "WATCHER  STATUS  PROCESSES  REASON",
        "db       active  2",
        f"web      failed  0          {why}",
    ]
    assert single.stdout == f"failed ({why})\n"
