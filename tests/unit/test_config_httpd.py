"""``httpd = true``: the console's socket and watcher, and the setups refused."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from circusd.config.loader import load
from circusd.config.model import Config
from circusd.errors import ConfigError

ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/opt/circusd"}
OWNER = "[circus]\nendpoint_owner = nobody\nhttpd = true\nhttpd_user = nobody\n"


def load_text(directory: Path, text: str) -> Config:
    path = directory / "circus.ini"
    path.write_text(text)
    return load(str(path), ENV)


def refusal(directory: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(directory, text)
    return info.value


def test_httpd_runs_the_console_as_httpd_user_on_a_socket_circusd_binds(
    tmp_path: Path,
) -> None:
    config = load_text(tmp_path, OWNER)
    [sock] = [s for s in config.sockets if s.name == "circushttpd"]
    assert (sock.host, sock.port, sock.family) == ("127.0.0.1", 8080, "AF_INET")
    [watcher] = [w for w in config.watchers if w.name == "circushttpd"]
    assert watcher.uid == "nobody"
    assert watcher.singleton and watcher.no_new_privs
    assert list(watcher.args) == [
        "-P", "-m", "circusd.web", "serve", "--fd", "$(circus.sockets.circushttpd)"
    ]  # fmt: skip
    assert watcher.env["CIRCUSHTTPD_ENDPOINT"] == config.circus.endpoint
    assert watcher.env["CIRCUSHTTPD_PUBSUB_ENDPOINT"] == config.circus.pubsub_endpoint
    assert watcher.env["CIRCUSHTTPD_USERS"] == str(tmp_path / "circushttpd.users")
    assert watcher.env["PYTHONPATH"] == "/opt/circusd"
    assert "CIRCUSHTTPD_STATS_ENDPOINT" not in watcher.env  # statsd is off


def test_console_settings_go_in_its_environment_not_its_command_line(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        OWNER + "statsd = true\nhttpd_users = users.txt\nhttpd_certfile = c.pem\n"
        "httpd_keyfile = k.pem\nhttpd_trusted_proxies = 10.0.0.5\n",
    )
    [watcher] = [w for w in config.watchers if w.name == "circushttpd"]
    command = shlex.join([watcher.cmd, *watcher.args])
    for value in ("users.txt", "k.pem", "c.pem", "10.0.0.5"):
        assert value not in command
    assert watcher.env["CIRCUSHTTPD_USERS"] == str(tmp_path / "users.txt")
    assert watcher.env["CIRCUSHTTPD_KEYFILE"] == str(tmp_path / "k.pem")
    assert watcher.env["CIRCUSHTTPD_TRUSTED_PROXIES"] == "10.0.0.5"
    assert watcher.env["CIRCUSHTTPD_STATS_ENDPOINT"] == config.circus.stats_endpoint


def test_httpd_needs_httpd_user(tmp_path: Path) -> None:
    err = refusal(tmp_path, "[circus]\nhttpd = true\n")
    assert err.key == "httpd_user"
    assert "needs httpd_user" in str(err)


def test_httpd_user_root_is_refused(tmp_path: Path) -> None:
    err = refusal(tmp_path, "[circus]\nhttpd = true\nhttpd_user = root\n")
    assert err.key == "httpd_user"
    assert "is root" in str(err)


def test_httpd_user_with_no_rights_is_refused(tmp_path: Path) -> None:
    err = refusal(tmp_path, "[circus]\nhttpd = true\nhttpd_user = nobody\n")
    assert "would refuse httpd_user nobody everything" in str(err)


def test_httpd_user_in_readonly_group_is_accepted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "[circus]\nreadonly_group = nogroup\nhttpd = true\nhttpd_user = nobody\n",
    )
    assert any(w.name == "circushttpd" for w in config.watchers)


def test_plain_http_beyond_loopback_is_refused(tmp_path: Path) -> None:
    err = refusal(tmp_path, OWNER + "httpd_host = 0.0.0.0\n")
    assert err.key == "httpd_host"
    assert "httpd_trusted_proxies" in str(err) and "httpd_certfile" in str(err)


@pytest.mark.parametrize(
    "extra",
    [
        "httpd_trusted_proxies = 192.0.2.10\n",
        "httpd_certfile = /etc/ssl/c.pem\nhttpd_keyfile = /etc/ssl/k.pem\n",
    ],
)
def test_beyond_loopback_with_tls_or_a_stated_proxy_is_accepted(
    tmp_path: Path, extra: str
) -> None:
    config = load_text(tmp_path, OWNER + "httpd_host = 0.0.0.0\n" + extra)
    [sock] = [s for s in config.sockets if s.name == "circushttpd"]
    assert sock.host == "0.0.0.0"


def test_half_a_tls_setup_is_refused(tmp_path: Path) -> None:
    err = refusal(tmp_path, OWNER + "httpd_certfile = c.pem\n")
    assert err.key == "httpd_keyfile"


def test_an_invalid_trusted_proxy_is_refused(tmp_path: Path) -> None:
    err = refusal(tmp_path, OWNER + "httpd_trusted_proxies = proxy.example\n")
    assert err.key == "httpd_trusted_proxies"


def test_a_watcher_named_circushttpd_clashes(tmp_path: Path) -> None:
    err = refusal(tmp_path, OWNER + "\n[watcher:circushttpd]\ncmd = sleep 1\n")
    assert "already has one" in str(err)


def test_ipv6_loopback_host(tmp_path: Path) -> None:
    config = load_text(tmp_path, OWNER + "httpd_host = ::1\n")
    [sock] = [s for s in config.sockets if s.name == "circushttpd"]
    assert (sock.host, sock.family) == ("::1", "AF_INET6")


def test_httpd_off_adds_nothing(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nhttpd = false\nhttpd_user = root\n")
    assert config.watchers == config.sockets == ()
