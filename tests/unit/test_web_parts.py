"""The console's pure parts: login throttling and sessions on a fake clock,
password hashes and the users file, the request checks, and the model fed
with Circus-shaped statistics."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from circusd.web import pages
from circusd.web.console import is_local, local_uid
from circusd.web.model import Model, size
from circusd.web.passwords import (
    Role,
    UsersFileError,
    UserStore,
    check_login,
    hash_password,
    parse_users,
    update_users,
    verify_password,
)
from circusd.web.security import (
    client_of,
    cross_site_problem,
    host_name,
    host_problem,
)
from circusd.web.sessions import IDLE, LIFETIME, Sessions
from circusd.web.settings import Settings, SettingsError, check, parse_proxies
from circusd.web.throttle import MAX_FAILURES, WINDOW, Throttle, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- throttle -----------------------------------------------------------------------


def test_throttle_refuses_after_the_failures_until_the_oldest_ages_out() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    keys = ["address:10.0.0.1", "user:alice"]
    for _ in range(MAX_FAILURES):
        assert throttle.wait(keys) == 0
        throttle.failed(keys)
        clock.now += 1
    assert throttle.wait(keys) == pytest.approx(WINDOW - MAX_FAILURES)
    assert throttle.wait(["address:10.0.0.2"]) == 0  # another address may try
    assert throttle.wait(["user:alice"]) > 0  # but not for the same user
    clock.now += WINDOW - MAX_FAILURES
    assert throttle.wait(keys) == 0


def test_a_success_clears_the_user_but_not_the_address() -> None:
    throttle = Throttle(clock=Clock())
    keys = ["address:10.0.0.1", "user:alice"]
    for _ in range(MAX_FAILURES):
        throttle.failed(keys)
    throttle.succeeded("user:alice")
    assert throttle.wait(["user:alice"]) == 0
    assert throttle.wait(["address:10.0.0.1"]) > 0


def test_a_right_password_takes_back_its_attempt() -> None:
    throttle = Throttle(clock=Clock())
    keys = ["address:10.0.0.1", "user:alice"]
    for _ in range(MAX_FAILURES - 1):
        throttle.failed(keys)
    stamp = throttle.failed(keys)  # counted before the check
    assert throttle.wait(keys) > 0
    throttle.forgive(keys, stamp)
    assert throttle.wait(keys) == 0


# -- sessions -----------------------------------------------------------------------


def test_every_loopback_address_and_each_ipv6_64_count_as_one_address() -> None:
    assert address_key("127.0.0.1") == address_key("127.3.2.1") == "address:loopback"
    assert address_key("::1") == address_key("::ffff:127.0.0.9") == "address:loopback"
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7")
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1")
    assert address_key("2001:db8::1") != address_key("2001:db8:0:1::1")
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def test_sessions_end_when_idle_or_too_old() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    session = sessions.login("alice", "operate", "hash")
    clock.now += IDLE - 1
    assert sessions.get(session.id) is session
    clock.now += IDLE + 1
    assert sessions.get(session.id) is None
    busy = sessions.login("bob", "operate", "hash")
    for _ in range(int(LIFETIME // (IDLE / 2)) + 1):
        clock.now += IDLE / 2
        found = sessions.get(busy.id)
    assert found is None  # kept busy, it still ends after LIFETIME


def test_each_session_has_its_own_csrf_token_compared_in_full() -> None:
    sessions = Sessions(Clock())
    one, two = sessions.login("a", "operate", "h"), sessions.anonymous()
    assert one.csrf != two.csrf and one.id != two.id
    assert one.valid_csrf(one.csrf)
    assert not one.valid_csrf(two.csrf)
    assert not one.valid_csrf(one.csrf[:-1])
    assert not one.valid_csrf(None) and not one.valid_csrf("")


# -- passwords and the users file ----------------------------------------------------


def test_password_hashes_are_salted_scrypt() -> None:
    first, second = hash_password("a long password"), hash_password("a long password")
    assert first != second and first.startswith("scrypt$32768$8$1$")
    assert verify_password("a long password", first)
    assert not verify_password("a long passwore", first)
    assert not verify_password("a long password", "plain")
    assert not check_login(None, "anything")


def test_users_file_lines_are_checked() -> None:
    good = f"# comment\nalice:operate:{hash_password('xxxxxxxxxx')}\n"
    assert parse_users(good, "f")["alice"].role is Role.OPERATE
    for bad, problem in (
        ("alice:operate\n", "expected NAME:ROLE:HASH"),
        ("alice:admin:scrypt$2$1$1$AA==$AA==\n", "invalid role or hash"),
        ("-x:read:" + hash_password("xxxxxxxxxx") + "\n", "invalid user name"),
    ):
        with pytest.raises(UsersFileError, match=problem):
            parse_users(bad, "f")


def test_update_users_keeps_the_file_mode_and_refuses_duplicates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users"
    update_users(str(path), "alice", password="first password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)
    with pytest.raises(UsersFileError, match="already exists"):
        update_users(str(path), "alice", password="second password")
    update_users(str(path), "alice", password="second password", replace=True,
                 role=Role.READ)  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    user = UserStore(str(path)).get("alice")
    assert user is not None and user.role is Role.READ
    assert verify_password("second password", user.hash)
    update_users(str(path), "alice", remove=True)
    assert UserStore(str(path)).get("alice") is None
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".users-")]


def test_a_users_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users"
    update_users(str(path), "alice", password="first password")
    path.chmod(0o664)
    with pytest.raises(UsersFileError, match="may be changed by other users"):
        UserStore(str(path))


def test_the_users_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    update_users(str(path), "alice", password="first password")
    store = UserStore(str(path))
    assert store.get("bob") is None
    update_users(str(path), "bob", password="bob's password")
    assert store.get("bob") is not None


# -- request checks -----------------------------------------------------------------


PROXY = parse_proxies("10.0.0.5, 192.168.0.0/24")


def test_forwarded_headers_are_ignored_from_an_untrusted_peer() -> None:
    headers = {
        "Host": "127.0.0.1:8080",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "console.example",
    }
    client = client_of("127.0.0.1", headers, PROXY, tls=False)
    assert (client.address, client.scheme, client.host) == (
        "127.0.0.1", "http", "127.0.0.1:8080"
    )  # fmt: skip
    assert client.origin == "http://127.0.0.1:8080"


def test_forwarded_headers_count_from_a_trusted_proxy() -> None:
    headers = {
        "Host": "backend",
        "X-Forwarded-For": "198.51.100.1, 203.0.113.9, 192.168.0.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "console.example",
    }
    client = client_of("10.0.0.5", headers, PROXY, tls=False)
    # The right-most address that is not a trusted proxy: what the client
    # put further left can be forged.
    assert client.address == "203.0.113.9"
    assert client.origin == "https://console.example"


def test_host_names_and_dns_rebinding() -> None:
    assert host_name("[::1]:8080") == "::1" and host_name("a.example:80") == "a.example"
    local = client_of("127.0.0.1", {"Host": "localhost:8080"}, (), tls=False)
    assert host_problem(local, loopback_only=True) is None
    rebound = client_of("127.0.0.1", {"Host": "evil.example:8080"}, (), tls=False)
    assert "unexpected Host" in str(host_problem(rebound, loopback_only=True))
    assert host_problem(rebound, loopback_only=False) is None
    assert host_problem(client_of("127.0.0.1", {}, (), False), True) is not None


def test_cross_site_checks() -> None:
    client = client_of("127.0.0.1", {"Host": "127.0.0.1:8080"}, (), tls=False)
    same = {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
    assert cross_site_problem(same, client) is None
    assert cross_site_problem({}, client) is None  # curl: the token decides
    assert cross_site_problem({"Sec-Fetch-Site": "same-site"}, client)
    assert cross_site_problem({"Origin": "http://127.0.0.1:9090"}, client)
    assert cross_site_problem({"Origin": "https://127.0.0.1:8080"}, client)


def test_plain_http_is_refused_beyond_loopback() -> None:
    base = Settings(endpoint="tcp://127.0.0.1:5555", users_file="u")
    check(base)
    with pytest.raises(SettingsError, match="refusing plain HTTP on 0.0.0.0"):
        check(Settings("e", "u", host="0.0.0.0"))
    check(Settings("e", "u", host="0.0.0.0", trusted_proxies=PROXY))
    check(Settings("e", "u", host="::", certfile="c", keyfile="k"))
    with pytest.raises(SettingsError, match="both"):
        check(Settings("e", "u", certfile="c"))
    with pytest.raises(SettingsError, match="invalid trusted proxy"):
        parse_proxies("proxy.example")


# -- the model ------------------------------------------------------------------------


def test_the_model_follows_circus_shaped_statistics() -> None:
    clock = Clock()
    model = Model(clock)
    info = {"cpu": 1.0, "mem": 0.5, "mem_info1": "2.0M", "age": 10.0,
            "username": "www", "wid": 1}  # fmt: skip
    model.replace_all(
        {"Web App": "active", "idle": "stopped"},
        {},
        {"Web App": {"41": info, "42": "No such process (stopped?)"}},
        {"Web App": 2, "idle": 1},
    )
    view = model.watchers["Web App"]
    assert list(view.processes) == [41] and view.rss == 2 * 1024**2
    clock.now += 1
    sample = model.apply_stat(
        "stat.web_app.41",
        {"cpu": 25.0, "mem": 1.5, "mem_info1": "3.0M", "age": 11.0},
    )
    assert sample is not None and sample.series == "Web App/41"
    assert sample.point == (1001.0, 25.0, 1.5, 3 * 1024**2)
    total = model.apply_stat(
        "stat.web_app", {"pid": [41], "cpu": 25.0, "mem": 1.5, "age": 11.0}
    )
    assert total is not None and total.point[3] == 3 * 1024**2
    assert model.apply_stat("stat.circus.1", {"cpu": 1}) is None
    assert model.apply_stat("stat.sockets", {"reads": 1}) is None
    assert model.apply_stat("stat.web_app.99", {"cpu": 1}) is None  # not ours
    assert model.apply_stat("stat.web_app", {"cpu": "N/A"}).point[1] is None  # type: ignore[union-attr]
    assert set(model.series_of("Web App")) == {"Web App", "Web App/41"}
    model.remove("Web App")
    assert model.history == {}


def test_a_process_row_shows_pid_uid_cpu_memory_and_age() -> None:
    clock = Clock()
    model = Model(clock, uid_of={"www": 33}.get)
    info = {"cpu": 12.5, "mem": 0.5, "mem_info1": "2.0M", "age": 75.0,
            "username": "www", "wid": 1}  # fmt: skip
    model.replace_all({"web": "active"}, {}, {"web": {"41": info}}, {"web": 1})
    clock.now += 5
    row = pages.process_row(model.watchers["web"], model.watchers["web"].processes[41],
                            clock.now)  # fmt: skip
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[:6] == [
        "41", "1", 'www <span class="muted">(33)</span>', "12.5 %", "2.0M (0.5 %)",
        "1m 20s",
    ]  # fmt: skip
    assert model.snapshot()["watchers"][0]["processes"][0]["uid"] == 33
    unknown = Model(clock)  # circusd elsewhere: its names mean nothing here
    unknown.replace_all({"web": "active"}, {}, {"web": {"41": info}}, {"web": 1})
    process = unknown.watchers["web"].processes[41]
    assert process.uid is None and pages.user(process) == "www"


def test_sizes_in_circus_notation() -> None:
    assert size("512B") == 512 and size("1.5K") == 1536 and size("2.0G") == 2 * 1024**3
    assert size("N/A") is None and size("") is None and size(3) is None


def test_uids_are_shown_only_for_a_circusd_on_this_host() -> None:
    assert is_local("ipc:///run/circus/control.sock")
    assert is_local("tcp://127.0.0.1:5555") and is_local("tcp://[::1]:5555")
    assert not is_local("tcp://192.0.2.7:5555")
    assert local_uid("root") == 0 and local_uid("1234") == 1234
    assert local_uid("no-such-user-here") is None
