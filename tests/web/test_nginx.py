"""The console behind nginx, configured as docs/web.md says: the server
blocks are taken from the document itself, with only the certificate paths
and the listening ports (free ports on loopback, not 443 and 80) changed.
A login, an action, a refused cross-site post and the live event stream all
go through nginx over TLS."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_for
from tests.web.client import EventStream, Http
from tests.web.conftest import PASSWORD, certificate, free_port, status

NGINX = "/usr/sbin/nginx"
DOCUMENT = REPO / "docs" / "web.md"


def documented_server_blocks() -> str:
    found = re.search(r"```nginx\n(.*?)```", DOCUMENT.read_text(), re.DOTALL)
    assert found, f"no nginx example in {DOCUMENT}"
    return found.group(1)


def nginx_config(workdir: Path, console_port: int, tls_port: int) -> str:
    cert, key = certificate(workdir)
    servers = documented_server_blocks()
    replacements = {
        "/etc/ssl/certs/console.example.org.pem": str(cert),
        "/etc/ssl/private/console.example.org.key": str(key),
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "listen [::]:80;": "",
        "http://127.0.0.1:8080": f"http://127.0.0.1:{console_port}",
    }
    for old, new in replacements.items():
        assert old in servers, f"{DOCUMENT}'s nginx example has no {old!r}"
        servers = servers.replace(old, new)
    return (
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/nginx-error.log;\n"
        "events {}\nhttp {\n"
        f"access_log {workdir}/nginx-access.log;\n"
        f"client_body_temp_path {workdir}/nginx-body;\n"
        f"proxy_temp_path {workdir}/nginx-proxy;\n{servers}}}\n"
    )


@pytest.fixture
def daemon(start_daemon, workdir: Path, request: pytest.FixtureRequest):
    owner = ""
    if os.geteuid() == 0:
        owner = f"endpoint_owner = {request.getfixturevalue('test_user').name}\n"
    return start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n{owner}\n"
        "[watcher:web]\ncmd = sleep 300\n"
    )


@pytest.fixture
def start_nginx(workdir: Path) -> Iterator[Callable[[int], Http]]:
    """nginx in front of a console port; returns a client for nginx."""
    if not shutil.which(NGINX):
        pytest.skip("needs nginx (Debian: nginx-light)")
    started: list[subprocess.Popen[bytes]] = []

    def start(console_port: int) -> Http:
        tls_port = free_port()
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(workdir, console_port, tls_port))
        check = subprocess.run(
            [NGINX, "-t", "-c", str(config)], capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stderr.decode()
        with (workdir / "nginx.out").open("wb") as output:
            process = subprocess.Popen(
                [NGINX, "-c", str(config), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        http = Http(f"https://127.0.0.1:{tls_port}", str(workdir / "console.pem"))
        wait_for(lambda: _answers(http), 10, "nginx to answer")
        return http

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def _answers(http: Http) -> bool:
    try:
        return http.get("/login").status == 200
    except OSError:
        return False


def test_the_documented_nginx_setup_serves_the_console(
    start_console, daemon, operator, start_nginx
) -> None:
    console = start_console(daemon, operator, "--trusted-proxy", "127.0.0.1")
    http = start_nginx(int(console.url.rsplit(":", 1)[1]))

    reply = http.login("alice", PASSWORD)
    assert reply.status == 303, reply.body
    fields = [part.strip().lower() for part in reply.cookies[0].split(";")]
    assert fields[0].startswith("__host-circushttpd=") and "secure" in fields
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")

    stream = EventStream(http, "/events?watcher=web")
    try:
        stream.until("fragments")
        token = http.csrf("/")
        cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        reply = http.post("/watchers/web/stop", {"csrf": token}, headers=cross_site)
        assert reply.status == 403
        assert status(daemon, "web") == "active"

        assert http.act("web", "stop").status == 200
        # The change reaches the open page through nginx without buffering.
        stopped = stream.until(
            "fragments", lambda data: 'data-status="stopped"' in data["summary"]
        )
        assert "No processes." in stopped["processes"]
    finally:
        stream.close()
    assert status(daemon, "web") == "stopped"
