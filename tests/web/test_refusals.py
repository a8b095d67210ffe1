"""What the console refuses, over HTTP, against a real circusd: requests
without a login, state changes without the CSRF token, cross-site posts,
GETs that try to change state, users whose circusd policy is read-only,
and login guessing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ServiceUser, wait_for
from tests.web.client import EventStream, Http
from tests.web.conftest import (
    PASSWORD,
    READER_PASSWORD,
    Reader,
    both_flavours,
    certificate,
    status,
)

WATCHERS = """
[watcher:web]
cmd = sleep 300
numprocesses = 2
"""


@pytest.fixture
def daemon(start_daemon, workdir: Path, request: pytest.FixtureRequest):
    """circusd; the test user is its endpoint_owner when the tests run as
    root (the debian flavour of the console runs as that user)."""
    owner = ""
    if os.geteuid() == 0:
        owner = f"endpoint_owner = {request.getfixturevalue('test_user').name}\n"
    return start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n{owner}\n" + WATCHERS
    )


@pytest.fixture
def console(start_console, daemon, operator):
    return start_console(daemon, operator)


def logged_in(console) -> Http:
    http = console.http()
    reply = http.login("alice", PASSWORD)
    assert reply.status == 303, reply.body
    return http


# -- no login --------------------------------------------------------------------------


@both_flavours
def test_pages_and_streams_need_a_login(console) -> None:
    http = console.http()
    for path in ("/", "/watchers/web"):
        reply = http.get(path)
        assert reply.status == 303
        assert reply.location.startswith("/login?next=")
    for path in ("/api/watchers", "/events", "/events?watcher=web"):
        reply = http.get(path)
        assert reply.status == 401
        assert reply.json() == {"ok": False, "message": "not logged in"}


def test_an_action_without_a_login_is_refused(console, daemon) -> None:
    http = console.http()
    token = http.csrf("/login")  # an anonymous session's token is no login
    reply = http.post("/watchers/web/stop", {"csrf": token}, headers=http.same_origin())
    assert reply.status == 401
    assert status(daemon, "web") == "active"
    reply = console.http().post("/watchers/web/stop", {}, headers=http.same_origin())
    assert reply.status == 401
    assert status(daemon, "web") == "active"


def test_a_wrong_password_does_not_log_in(console) -> None:
    http = console.http()
    reply = http.login("alice", "not the password")
    assert reply.status == 401
    assert "Wrong user name or password." in reply.body
    assert http.get("/").status == 303
    assert console.http().login("mallory", PASSWORD).status == 401


# -- CSRF and cross-site requests ------------------------------------------------------


@both_flavours
def test_a_state_change_without_the_csrf_token_is_refused(console, daemon) -> None:
    http = logged_in(console)
    for form in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
        reply = http.post("/watchers/web/stop", form, headers=http.same_origin())
        assert reply.status == 403
        assert "missing or wrong CSRF token" in reply.body
    reply = http.post("/logout", {}, headers=http.same_origin())
    assert reply.status == 403
    assert status(daemon, "web") == "active"
    assert http.get("/").status == 200  # still logged in


CROSS_SITE = [
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site"},
]


@both_flavours
def test_a_cross_site_form_post_is_refused(console, daemon) -> None:
    http = logged_in(console)
    # Even with the right token (which another site cannot read), a post
    # the browser marks as coming from elsewhere is refused.
    token = http.csrf("/")
    for headers in CROSS_SITE:
        reply = http.post("/watchers/web/stop", {"csrf": token}, headers=headers)
        assert reply.status == 403, headers
        assert "refused" in reply.body
        reply = http.post("/logout", {"csrf": token}, headers=headers)
        assert reply.status == 403, headers
    assert status(daemon, "web") == "active"
    assert http.get("/").status == 200


@both_flavours
def test_a_get_cannot_change_state(console, daemon) -> None:
    http = logged_in(console)
    token = http.csrf("/")
    for action in ("stop", "decr", "signal", "restart"):
        reply = http.get(f"/watchers/web/{action}?csrf={token}&signum=KILL")
        assert reply.status == 405
    assert http.get(f"/logout?csrf={token}").status == 405
    assert status(daemon, "web") == "active"
    assert len(daemon.pids("web")) == 2
    assert http.get("/").status == 200  # the GET /logout left the session alone


def test_another_host_name_is_refused(console) -> None:
    """A site that points its own name at 127.0.0.1 (DNS rebinding) gets
    no page: plain HTTP on loopback answers only to loopback names."""
    http = console.http()
    reply = http.get("/login", headers={"Host": "evil.example:8080"})
    assert reply.status == 400
    assert "unexpected Host" in reply.body
    assert http.get("/login", headers={"Host": "localhost"}).status == 200


# -- what goes through -----------------------------------------------------------------


@both_flavours
def test_an_action_from_the_page_is_done(console, daemon) -> None:
    http = logged_in(console)
    reply = http.act("web", "stop")
    assert reply.status == 200, reply.body
    assert reply.json() == {"ok": True, "message": "circusd accepted stop on web"}
    wait_for(lambda: status(daemon, "web") == "stopped", what="web to stop")
    assert http.act("web", "start").status == 200
    wait_for(lambda: len(daemon.pids("web")) == 2, what="web to start again")
    assert http.act("web", "incr").status == 200
    wait_for(lambda: len(daemon.pids("web")) == 3, what="a third process")
    for action in ("restart", "reload"):
        before = set(daemon.pids("web"))
        reply = http.act("web", action)
        assert reply.json() == {
            "ok": True,
            "message": f"circusd accepted {action} on web",
        }

        def replaced(old: set[int] = before) -> bool:
            pids = set(daemon.pids("web"))
            return len(pids) == 3 and not old & pids

        wait_for(replaced, what=f"three new processes after {action}")


def test_a_form_post_without_script_comes_back_with_a_notice(console, daemon) -> None:
    http = logged_in(console)
    token = http.csrf("/")
    reply = http.post(
        "/watchers/web/decr", {"csrf": token, "back": "/"}, headers=http.same_origin()
    )
    assert reply.status == 303 and reply.location == "/"
    page = http.get("/")
    assert "circusd accepted decr on web" in page.body
    assert "circusd accepted decr on web" not in http.get("/").body  # shown once
    wait_for(lambda: len(daemon.pids("web")) == 1, what="one process left")


def test_a_signal_names_a_known_signal_and_a_number(console, daemon) -> None:
    http = logged_in(console)
    assert http.act("web", "signal", signum="BOGUS").status == 400
    assert http.act("web", "signal", signum="HUP", pid="12x").status == 400
    pid = daemon.pids("web")[0]
    reply = http.act("web", "signal", signum="SIGKILL", pid=str(pid))
    assert reply.status == 200, reply.body
    wait_for(lambda: pid not in daemon.pids("web"), what="the killed process to go")


def test_back_never_leaves_the_console(console) -> None:
    http = logged_in(console)
    token = http.csrf("/")
    for back in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        reply = http.post(
            "/watchers/web/incr",
            {"csrf": token, "back": back},
            headers=http.same_origin(),
        )
        assert reply.location == "/watchers/web"


# -- read-only users -------------------------------------------------------------------


ACTIONS = [
    ("start", {}),
    ("stop", {}),
    ("restart", {}),
    ("reload", {}),
    ("incr", {}),
    ("decr", {}),
    ("signal", {"signum": "HUP"}),
]


@pytest.mark.root
def test_a_read_only_circusd_policy_refusal_is_shown(
    start_daemon, start_console, workdir: Path, reader: Reader
) -> None:
    """The console runs as a member of readonly_group: circusd lets it look
    and refuses every action, each with its reason on the page."""
    daemon = start_daemon(
        f"[circus]\nendpoint = ipc://{workdir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        f"stats_endpoint = ipc://{workdir}/stats.sock\n"
        f"readonly_group = {reader.group}\n" + WATCHERS
    )
    http = logged_in(start_console(daemon, reader))
    assert 'data-status="active"' in http.get("/").body  # it may read
    stream = EventStream(http, "/events?watcher=web")
    try:
        assert stream.until("stat")["watcher"] == "web"  # and see the charts
    finally:
        stream.close()
    for action, fields in ACTIONS:
        reply = http.act("web", action, **fields)
        assert reply.status == 403, (action, reply.body)
        message = reply.json()["message"]
        assert message.startswith(
            f"circusd refused {action} on web: permission denied: '{action}' needs "
        )
        assert f"you are {reader.name} (uid {reader.uid})" in message
    token = http.csrf("/")
    reply = http.post(
        "/watchers/web/stop", {"csrf": token, "back": "/"}, headers=http.same_origin()
    )
    assert reply.status == 303
    page = http.get("/")
    assert 'class="notice-refused"' in page.body
    assert "circusd refused stop on web: permission denied" in page.body
    assert status(daemon, "web") == "active"
    assert "refused command=stop" in daemon.output()  # circusd's audit log


def test_a_read_only_console_user_is_refused(console, daemon) -> None:
    http = console.http()
    assert http.login("rita", READER_PASSWORD).status == 303
    page = http.get("/")
    assert "read-only" in page.body and 'data-action="stop"' not in page.body
    reply = http.act("web", "stop")
    assert reply.status == 403
    assert reply.json()["message"] == (
        "refused: console user rita may only look (role read)"
    )
    assert status(daemon, "web") == "active"


# -- logging in and out ----------------------------------------------------------------


def test_logout_ends_the_session(console) -> None:
    http = logged_in(console)
    old = dict(http.cookies)
    reply = http.post("/logout", {"csrf": http.csrf("/")}, headers=http.same_origin())
    assert reply.status == 303 and reply.location == "/login"
    assert http.get("/").status == 303
    replay = console.http()
    replay.cookies = old
    assert replay.get("/").status == 303


def test_login_makes_a_new_session(console) -> None:
    http = console.http()
    http.csrf("/login")
    before = dict(http.cookies)
    http.login("alice", PASSWORD)
    assert http.cookies["circushttpd"] != before["circushttpd"]
    fixed = console.http()
    fixed.cookies = before  # a session id planted before login is worthless
    assert fixed.get("/").status == 303


def test_removing_a_user_ends_their_sessions(console, users_file: Path) -> None:
    http = logged_in(console)
    assert http.get("/").status == 200
    lines = users_file.read_text().splitlines(keepends=True)
    users_file.write_text("".join(x for x in lines if not x.startswith("alice:")))
    assert http.get("/").status == 303


def test_login_is_rate_limited(console) -> None:
    http = console.http()
    for _ in range(5):
        assert http.login("alice", "wrong guess").status == 401
    reply = http.login("alice", PASSWORD)
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) > 0
    assert "Too many failed logins" in reply.body


def test_parallel_guesses_are_limited_too(console) -> None:
    """Guesses sent all at once cannot all pass the limit before the first
    one is found wrong."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [console.http() for _ in range(12)]
    tokens = [client.csrf("/login") for client in clients]

    def guess(index: int) -> int:
        client = clients[index]
        form = {"csrf": tokens[index], "username": f"g{index}", "password": "wrong"}
        return client.post("/login", form, headers=client.same_origin()).status

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(guess, range(12)))
    assert statuses.count(401) <= 5, statuses
    assert set(statuses) <= {401, 429, 503}, statuses


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(console) -> None:
    """Changing X-Forwarded-For does not buy new attempts: the address
    counted is the connection's, since no proxy is trusted."""
    for attempt in range(6):
        http = console.http()
        headers = {"X-Forwarded-For": f"198.51.100.{attempt}"}
        reply = http.login(f"guess{attempt}", "wrong guess", headers=headers)
        assert reply.status == (429 if attempt == 5 else 401)


# -- headers and cookies ---------------------------------------------------------------


@both_flavours
def test_every_response_carries_the_security_headers(console) -> None:
    http = logged_in(console)
    replies = [
        http.get("/"),
        http.get("/watchers/web"),
        http.get("/login"),
        http.get("/static/console.js"),
        http.get("/nowhere"),
        http.get("/watchers/web/stop"),
        console.http().get("/"),
    ]
    for reply in replies:
        csp = reply.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in reply.headers  # plain HTTP
    assert replies[0].headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_or_style(console) -> None:
    http = logged_in(console)
    for path in ("/", "/watchers/web", "/login"):
        body = http.get(path).body
        assert "<script>" not in body and "<style" not in body
        assert " style=" not in body and " onclick=" not in body


def test_the_session_cookie_is_http_only_and_same_site_strict(console) -> None:
    reply = console.http().login("alice", PASSWORD)
    [cookie] = reply.cookies
    fields = [part.strip().lower() for part in cookie.split(";")]
    assert fields[0].startswith("circushttpd=")
    assert "httponly" in fields and "samesite=strict" in fields and "path=/" in fields
    assert "secure" not in fields  # plain HTTP on loopback


# -- trusted proxies and TLS -----------------------------------------------------------


@pytest.fixture
def proxied(start_console, daemon, operator):
    return start_console(daemon, operator, "--trusted-proxy", "127.0.0.1")


def test_x_forwarded_headers_count_from_a_trusted_proxy(proxied) -> None:
    for attempt in range(7):
        http = proxied.http()
        headers = {"X-Forwarded-For": f"198.51.100.{attempt}"}
        assert http.login(f"guess{attempt}", "wrong", headers=headers).status == 401
    http = proxied.http()
    http.headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "console.example"}
    http.origin = "https://console.example"
    reply = http.login("alice", PASSWORD)
    assert reply.status == 303, reply.body
    fields = [part.strip().lower() for part in reply.cookies[0].split(";")]
    assert fields[0].startswith("__host-circushttpd=") and "secure" in fields
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")


def test_behind_tls_the_cookie_is_secure(start_console, daemon, workdir: Path) -> None:
    cert, key = certificate(workdir)
    console = start_console(
        daemon, None, "--certfile", str(cert), "--keyfile", str(key)
    )
    http = console.http(cafile=str(cert))
    reply = http.login("alice", PASSWORD)
    assert reply.status == 303, reply.body
    fields = [part.strip().lower() for part in reply.cookies[0].split(";")]
    assert fields[0].startswith("__host-circushttpd=")
    assert "secure" in fields and "httponly" in fields
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")
    assert http.get("/").status == 200


# -- starting --------------------------------------------------------------------------


def run_console(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "circusd.web", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stderr


def test_plain_http_beyond_loopback_is_refused_at_start(users_file: Path) -> None:
    code, err = run_console(
        "serve", "--users", str(users_file), "--host", "0.0.0.0", "--allow-root"
    )
    assert code == 2
    assert "refusing plain HTTP on 0.0.0.0" in err


@pytest.mark.root
def test_the_console_refuses_to_run_as_root_unless_told(users_file: Path) -> None:
    code, err = run_console("serve", "--users", str(users_file))
    assert code == 2
    assert "refusing to run as root" in err


def test_adduser_reads_the_password_from_stdin_never_argv(
    workdir: Path, start_console, daemon
) -> None:
    import subprocess
    import sys

    path = workdir / "new.users"
    code, err = run_console("adduser", "--users", str(path), "--password", "x", "bob")
    assert code == 2 and "unrecognized arguments" in err
    added = subprocess.run(
        [sys.executable, "-m", "circusd.web", "adduser", "--users", str(path), "bob"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert added.returncode == 0, added.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert "a long enough password" not in path.read_text()
    short = subprocess.run(
        [sys.executable, "-m", "circusd.web", "adduser", "--users", str(path), "eve"],
        input="short\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert short.returncode == 1 and "password too short" in short.stderr
    console = start_console(daemon, None, "--users", str(path))
    assert console.http().login("bob", "a long enough password").status == 303


def test_user_commands_add_read_only_users_replace_and_remove(workdir: Path) -> None:
    import subprocess
    import sys

    from circusd.web.passwords import Role, UserStore

    path = str(workdir / "cli.users")

    def users(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "circusd.web", *args],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=30,
        )

    added = users("adduser", "--users", path, "--read-only", "rita", password="p" * 12)
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added rita (read) in {path}\n"
    again = users("adduser", "--users", path, "rita", password="q" * 12)
    assert again.returncode == 1 and "already exists" in again.stderr
    replaced = users("adduser", "--users", path, "--replace", "rita", password="q" * 12)
    assert replaced.returncode == 0, replaced.stderr
    rita = UserStore(path).get("rita")
    assert rita is not None and rita.role is Role.OPERATE
    assert users("deluser", "--users", path, "rita").returncode == 0
    assert UserStore(path).get("rita") is None
    gone = users("deluser", "--users", path, "rita")
    assert gone.returncode == 1 and "no user 'rita'" in gone.stderr


@pytest.mark.root
def test_the_owner_console_acts_as_the_endpoint_owner(
    start_console, daemon, test_user: ServiceUser
) -> None:
    """Run as the endpoint_owner, the console may stop a watcher; circusd
    sees that user, not root, as the caller."""
    console = start_console(daemon, test_user)
    assert logged_in(console).act("web", "stop").status == 200
    wait_for(lambda: status(daemon, "web") == "stopped", what="web to stop")
    assert f"command=stop uid={test_user.uid} " in daemon.output()
