"""``httpd = true``: circusd runs the console itself, as ``httpd_user``.

circusd runs here with Debian's /usr/bin/python3 (and its python3-zmq,
python3-psutil and python3-aiohttp), as a Debian package would: the
console is started with circusd's own interpreter, which the unprivileged
``httpd_user`` must be able to run.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import REPO, ServiceUser, wait_for
from tests.web.client import Http
from tests.web.conftest import DEBIAN_PYTHON, PASSWORD, debian_aiohttp, free_port

pytestmark = pytest.mark.root


def debian_daemon_available() -> bool:
    import subprocess

    probe = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", "import psutil, zmq, aiohttp"], capture_output=True
    )
    return probe.returncode == 0


@pytest.fixture
def httpd_daemon(start_daemon, workdir: Path, users_file: Path, test_user: ServiceUser):
    if debian_aiohttp() is None or not debian_daemon_available():
        pytest.skip("needs Debian's python3-aiohttp, python3-zmq and python3-psutil")
    import os

    os.chown(users_file, 0, test_user.gid)
    port = free_port()
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {test_user.name}
        httpd = true
        httpd_user = {test_user.name}
        httpd_port = {port}
        httpd_users = {users_file}

        [watcher:web]
        cmd = sleep 300
        """,
        env={"PYTHONPATH": str(REPO)},
        python=DEBIAN_PYTHON,
    )
    daemon.extra["port"] = port
    return daemon


def console_pid(daemon) -> int:
    pids = wait_for(lambda: daemon.pids("circushttpd"), what="the console process")
    return int(pids[0])


def test_httpd_runs_the_console_as_httpd_user(httpd_daemon, test_user) -> None:
    daemon = httpd_daemon
    pid = console_pid(daemon)
    status = {
        key: value.split()
        for key, _, value in (
            line.partition(":")
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    }
    assert status["Uid"] == [str(test_user.uid)] * 4
    assert status["NoNewPrivs"] == ["1"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--fd" in cmdline
    assert not any(b"users" in part or b"ipc://" in part for part in cmdline)

    url = f"http://127.0.0.1:{daemon.extra['port']}"
    wait_for(lambda: "circushttpd started" in daemon.output(), what="the console")
    http = Http(url)
    assert http.login("alice", PASSWORD).status == 303
    assert 'data-watcher="web"' in http.get("/").body
    assert http.act("web", "stop").status == 200
    wait_for(
        lambda: daemon.call("status", name="web")["status"] == "stopped",
        what="web to stop through the console",
    )


def test_the_console_port_is_bound_by_circusd(httpd_daemon) -> None:
    """circusd holds the listening socket: the console can be restarted
    without losing it, and it could be below 1024."""
    daemon = httpd_daemon
    first = console_pid(daemon)
    assert daemon.call("restart", name="circushttpd", waiting=True)["status"] == "ok"
    second = console_pid(daemon)
    assert second != first
    with socket.create_connection(("127.0.0.1", daemon.extra["port"]), timeout=5):
        pass
    wait_for(
        lambda: (
            Http(f"http://127.0.0.1:{daemon.extra['port']}").get("/login").status == 200
        ),
        what="the restarted console to answer",
    )


def test_the_console_will_not_stop_itself(httpd_daemon) -> None:
    """Stop, −1 or a signal on the console's own watcher would leave the
    operator without the page they pressed it on: refused, with the reason;
    Restart is allowed (circusd holds the port and starts it again)."""
    daemon = httpd_daemon
    pid = console_pid(daemon)
    wait_for(lambda: "circushttpd started" in daemon.output(), what="the console")
    http = Http(f"http://127.0.0.1:{daemon.extra['port']}")
    assert http.login("alice", PASSWORD).status == 303
    for action, fields in (("stop", {}), ("decr", {}), ("signal", {"signum": "TERM"})):
        reply = http.act("circushttpd", action, **fields)
        assert reply.status == 409, (action, reply.body)
        assert reply.json()["message"] == (
            f"refused: {action} on circushttpd would end this console, which "
            "runs in it; use circusctl"
        )
    assert daemon.pids("circushttpd") == [pid]
    assert http.act("web", "stop").status == 200  # other watchers as before
