"""A hostile local user against circushttpd: the console runs as the
endpoint_owner with Debian's Python in front of a real circusd, and the
attacker is another real user (the ``reader`` user, who has no business
with the console's files) or whatever any local process can send to the
console's loopback port."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from circusd.web.connections import MAX_CONNECTIONS
from tests.conftest import ServiceUser, wait_for
from tests.web.client import Http
from tests.web.conftest import PASSWORD, Reader, both_flavours

pytestmark = pytest.mark.root

WATCHERS = """
[watcher:web]
cmd = sleep 300
"""


@pytest.fixture
def daemon(start_daemon, workdir: Path, test_user: ServiceUser):
    return start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        f"endpoint_owner = {test_user.name}\n" + WATCHERS
    )


@pytest.fixture
def intruder_name(reader: Reader) -> str:
    """A local user with no business with the console."""
    return reader.name


@pytest.fixture
def console(start_console, daemon, test_user: ServiceUser):
    return start_console(daemon, test_user)


def mallory_users(workdir: Path, users_file: Path, owner: int) -> Path:
    """A users file with mallory (who knows alice's password) in it."""
    path = workdir / "mallory.users"
    text = users_file.read_text().replace("alice:", "mallory:")
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(0o644)
    return path


# -- the users file ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["another user's", "group-writable", "a symlink"])
def test_the_console_will_not_start_on_a_users_file_others_control(
    start_console, daemon, test_user: ServiceUser, reader: Reader,
    users_file: Path, workdir: Path, how: str,
) -> None:  # fmt: skip
    if how == "another user's":
        bad = mallory_users(workdir, users_file, reader.uid)
        expected = f"belongs to uid {reader.uid}"
    elif how == "group-writable":
        bad = workdir / "group.users"
        shutil.copy(users_file, bad)
        os.chown(bad, 0, test_user.gid)
        bad.chmod(0o664)
        expected = "may be changed by other users"
    else:
        bad = workdir / "link.users"
        bad.symlink_to(users_file)
        expected = "cannot read users file"
    console = start_console(daemon, test_user, "--users", str(bad), ready=False)
    wait_for(lambda: console.process.poll() is not None, what="the console to stop")

    assert console.process.returncode == 1
    assert expected in console.output()


def test_a_users_file_swapped_for_another_users_logs_nobody_in(
    console, users_file: Path, workdir: Path, reader: Reader
) -> None:
    http = console.http()
    assert http.login("alice", PASSWORD).status == 303
    assert http.get("/").status == 200
    # A user who can write the file's directory puts a file of their own
    # in its place.
    os.replace(mallory_users(workdir, users_file, reader.uid), users_file)

    assert http.get("/").status == 303  # alice's session ends
    mallory = Http(console.url)
    reply = mallory.login("mallory", PASSWORD)
    assert reply.status == 503
    assert "users file cannot be read" in reply.body
    assert mallory.get("/api/watchers").status == 401
    assert f"belongs to uid {reader.uid}" in console.output()


# -- guessing passwords --------------------------------------------------------------


class FromAddress(Http):
    """A client that connects from a loopback address of its choosing: any
    local user may bind 127.0.0.0/8 addresses other than 127.0.0.1."""

    def __init__(self, url: str, source: str) -> None:
        super().__init__(url)
        self.source = source

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            self.host, self.port, timeout=15, source_address=(self.source, 0)
        )


def test_a_new_loopback_address_per_guess_does_not_escape_the_limit(console) -> None:
    statuses = [
        FromAddress(console.url, f"127.0.{n}.{n + 10}")
        .login(f"user{n}", "a guess")
        .status
        for n in range(6)
    ]
    assert statuses == [401] * 5 + [429]


# -- what a request may carry ----------------------------------------------------------


def test_a_back_path_with_line_breaks_gets_a_clean_redirect(console, daemon) -> None:
    http = Http(console.url)
    assert http.login("alice", PASSWORD).status == 303
    token = http.csrf("/")
    back = "/watchers/web\r\nSet-Cookie: planted=1"
    reply = http.post(
        "/watchers/web/incr", {"csrf": token, "back": back}, headers=http.same_origin()
    )
    assert reply.status == 303 and reply.location == "/watchers/web"
    assert not any("planted" in line for line in reply.cookies)
    assert "Traceback" not in console.output()


@pytest.mark.parametrize(
    "host", ["127.0.0.1:80@evil.example", "127.0.0.1:http", "[::1]x", "127.0.0.1:"]
)
def test_a_host_header_that_is_not_a_host_and_port_is_refused(console, host) -> None:
    reply = Http(console.url).get("/login", headers={"Host": host})
    assert reply.status == 400


@both_flavours
def test_malformed_requests_cost_one_log_line_each_not_a_traceback(
    start_console, daemon, operator
) -> None:
    console = start_console(daemon, operator)
    port = int(console.url.rsplit(":", 1)[1])
    bad = [
        b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /login HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # TLS hello
        b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    ]
    for request in bad:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            assert sock.recv(100).startswith(b"HTTP/")
    assert Http(console.url).get("/login").status == 200

    assert "Traceback" not in console.output()


# -- holding connections ---------------------------------------------------------------


@both_flavours
def test_half_sent_requests_cannot_use_up_the_consoles_connections(
    start_console, daemon, operator, intruder_name: str, workdir: Path
) -> None:
    console = start_console(daemon, operator)
    port = int(console.url.rsplit(":", 1)[1])
    script = workdir / "half_requests.py"
    script.write_text(HALF_REQUESTS)
    script.chmod(0o644)
    holder = subprocess.Popen(
        ["runuser", "-u", intruder_name, "--", "/usr/bin/python3", str(script),
         str(port), str(MAX_CONNECTIONS + 100)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("holding")
        reply = Http(console.url).get("/login")
        fds = len(os.listdir(f"/proc/{console.process.pid}/fd"))
    finally:
        holder.communicate(timeout=30)

    assert reply.status == 200
    assert fds < MAX_CONNECTIONS + 64, fds


HALF_REQUESTS = """\
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /login HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Slow: ")
    held.append(sock)
print("holding", len(held), flush=True)
sys.stdin.read()
"""
