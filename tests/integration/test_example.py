"""The example deployment in examples/web, run by the real daemon.

Each test copies the example to a temporary directory, gives it a free port
instead of 8080, starts the daemon on it as a subprocess (the way a user
does) and drives it over HTTP and with circusctl through the example's own
`ctl` wrapper.

CIRCUSD_BIN picks the daemon (default: .venv/bin/circusd); circusctl is taken
from the same directory unless CIRCUSCTL_BIN says otherwise. Pointing both at
.peers/circus/bin shows that the example is a valid Circus 0.19 deployment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "web"
CIRCUSD = Path(os.environ.get("CIRCUSD_BIN", REPO / ".venv" / "bin" / "circusd"))
CIRCUSCTL = Path(os.environ.get("CIRCUSCTL_BIN", CIRCUSD.with_name("circusctl")))
ANSWER = re.compile(r"^hello from worker wid=(\d+) pid=(\d+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    directory: Path
    port: int
    daemon: subprocess.Popen[bytes]
    metrics_port: int = 0

    def get(self) -> tuple[int, int] | None:
        """One request to the web workers: (wid, pid), or None if refused."""
        url = f"http://127.0.0.1:{self.port}/"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode().strip()
        except (urllib.error.URLError, ConnectionError):
            return None
        match = ANSWER.match(body)
        assert match, f"unexpected answer from {url}: {body!r}"
        return int(match[1]), int(match[2])

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CIRCUSCTL=str(CIRCUSCTL))
        return subprocess.run(
            [str(self.directory / "ctl"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )

    def processes(self, script: str) -> list[psutil.Process]:
        """The daemon's live children running `python3 SCRIPT`."""
        found = []
        for child in psutil.Process(self.daemon.pid).children():
            try:
                if script in child.cmdline() and child.status() != "zombie":
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def log(self) -> str:
        return (self.directory / "daemon.log").read_text(errors="replace")


def exited(daemon: subprocess.Popen[bytes]) -> bool:
    return daemon.poll() is not None


def stop_daemon(daemon: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(5)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    if not CIRCUSD.exists():
        pytest.fail(f"no daemon at {CIRCUSD}: run `make venv` or set CIRCUSD_BIN")
    directory = tmp_path / "web"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("var"))
    (directory / "var").mkdir()
    port = free_port()
    config = directory / "circus.ini"
    text, count = re.subn(r"(?m)^port = 8080$", f"port = {port}", config.read_text())
    assert count == 1, "examples/web/circus.ini no longer has `port = 8080`"
    metrics_port = free_port()
    text, count = re.subn(
        r"(?m)^prometheus_endpoint = 127.0.0.1:9105$",
        f"prometheus_endpoint = 127.0.0.1:{metrics_port}",
        text,
    )
    assert count == 1, "examples/web/circus.ini no longer has prometheus_endpoint"
    config.write_text(text)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUS")}
    env.pop("NOTIFY_SOCKET", None)
    # The working directory is the copy, so that a daemon that resolves
    # relative paths against its cwd (Circus 0.19) finds the same files as
    # one that resolves them against the config file (circusd).
    with open(directory / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [str(CIRCUSD), str(config)],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = Deployment(directory, port, daemon, metrics_port)
    children: list[psutil.Process] = []
    try:
        wait_for(lambda: started.get() or exited(daemon), what="web workers answering")
        assert daemon.poll() is None, f"daemon exited:\n{started.log()}"
        yield started
    finally:
        if daemon.poll() is None:
            children = psutil.Process(daemon.pid).children(recursive=True)
        stop_daemon(daemon)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def not_yet_accepted(port: int) -> int:
    """Connections waiting in the accept queue of the listener on ``port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # LISTEN
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def test_example_spreads_requests_over_web_workers(deployment: Deployment) -> None:
    workers = {p.pid for p in deployment.processes("app.py")}
    assert len(workers) == 3, deployment.log()

    # Three clients at once, each connected before any sends its request: a
    # worker that took one connection waits for its request, so once none is
    # left waiting to be accepted, three workers hold one each. (One client
    # after another may well be served by the same worker every time.)
    clients = [
        socket.create_connection(("127.0.0.1", deployment.port), timeout=10)
        for _ in range(3)
    ]
    wait_for(lambda: not_yet_accepted(deployment.port) == 0, what="accepts")
    answers: set[tuple[int, int]] = set()
    for client in clients:
        with client:
            client.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            reply = b""
            while chunk := client.recv(4096):
                reply += chunk
        match = ANSWER.match(reply.decode().split("\r\n\r\n", 1)[1].strip())
        assert match, reply
        answers.add((int(match[1]), int(match[2])))

    assert len({pid for _, pid in answers}) >= 2, f"only {answers} answered"
    assert {pid for _, pid in answers} <= workers
    assert {wid for wid, _ in answers} <= {1, 2, 3}


def test_example_incr_adds_a_fourth_web_worker(deployment: Deployment) -> None:
    result = deployment.ctl("incr", "web")
    assert result.returncode == 0, result.stdout + result.stderr

    wait_for(lambda: len(deployment.processes("app.py")) == 4, what="4 web workers")
    result = deployment.ctl("--json", "numprocesses", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["numprocesses"] == 4


def test_example_shows_live_figures_in_top_and_for_prometheus(
    deployment: Deployment,
) -> None:
    result = deployment.ctl("top", "--iterations", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web" in result.stdout and "worker" in result.stdout

    url = f"http://127.0.0.1:{deployment.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        page = response.read().decode()
    assert 'circusd_watcher_processes{watcher="web"} 3' in page


def worker_log(deployment: Deployment) -> str:
    log = deployment.directory / "var" / "worker.log"
    return log.read_text() if log.exists() else ""


def test_example_background_job_logs_heartbeats_to_file(
    deployment: Deployment,
) -> None:
    wait_for(lambda: "seq=1 " in worker_log(deployment), what="the first heartbeat")

    assert re.search(r"heartbeat seq=1 pid=\d+ loadavg=", worker_log(deployment))


def test_example_stops_every_process_on_sigterm(deployment: Deployment) -> None:
    children = deployment.processes("app.py") + deployment.processes("worker.py")
    assert len(children) == 4, deployment.log()
    wait_for(lambda: "seq=1 " in worker_log(deployment), what="the first heartbeat")

    stop_daemon(deployment.daemon)

    assert deployment.daemon.returncode == 0, deployment.log()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running after the daemon stopped: {alive}"
    assert "stopping signal=SIGTERM" in worker_log(deployment)
