"""The loader: sections, option conversion, checks and error messages."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from circusd.config.loader import load
from circusd.config.model import CircusConfig, Config, Hook
from circusd.errors import ConfigError

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root"}


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def load_text(directory: Path, text: str) -> Config:
    return load(write(directory, "circus.ini", text), ENV)


def load_error(directory: Path, text: str) -> tuple[str, ConfigError]:
    path = write(directory, "circus.ini", text)
    with pytest.raises(ConfigError) as info:
        load(path, ENV)
    return path, info.value


# -- sections -------------------------------------------------------------------


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, "")
    assert config.circus == CircusConfig()
    assert config.watchers == config.sockets == config.plugins == ()
    assert config.path == str(tmp_path / "circus.ini")


def test_watcher_options_are_converted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [watcher:web]
        cmd = python -m http.server
        numprocesses = 3
        warmup_delay = 0.5
        respawn = false
        stop_signal = quit
        graceful_timeout = 5
        priority = 10
        umask = 027
        rlimit_nofile = 1024:2048
        max_retry = -1
        """,
    )
    (web,) = config.watchers
    assert web.name == "web"
    assert web.cmd == "python -m http.server"
    assert web.numprocesses == 3
    assert web.warmup_delay == 0.5
    assert web.respawn is False
    assert web.stop_signal == signal.SIGQUIT
    assert web.graceful_timeout == 5.0
    assert web.priority == 10
    assert web.umask == 0o27
    assert web.rlimits == {"nofile": (1024, 2048)}
    assert web.max_retry == -1
    assert web.source == f"{tmp_path / 'circus.ini'}:1"


def test_watchers_are_sorted_by_name(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watcher:b]\ncmd = b\n[watcher:a]\ncmd = a\n")
    assert [w.name for w in config.watchers] == ["a", "b"]


def test_streams_hooks_and_free_form_keys(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [watcher:w]
        cmd = app
        stdout_stream.class = FileStream
        stdout_stream.filename = /var/log/app.out
        stdout_stream.max_bytes = 1024
        stderr_stream.class = StdoutStream
        hooks.before_start = app.hooks.check, true
        hooks.after_stop = app.hooks:cleanup
        flapping.max_retry = 2
        """,
    )
    (w,) = config.watchers
    assert w.stdout_stream == {
        "class": "FileStream",
        "filename": "/var/log/app.out",
        "max_bytes": "1024",
    }
    assert w.stderr_stream == {"class": "StdoutStream"}
    assert w.hooks == {
        "before_start": Hook("app.hooks.check", True),
        "after_stop": Hook("app.hooks:cleanup", False),
    }
    assert w.extra == {"flapping.max_retry": "2"}


def test_socket_section(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [socket:Web]
        host = 127.0.0.1
        port = 8888
        family = inet6
        type = dgram
        proto = udp
        backlog = 10
        so_reuseport = true
        """,
    )
    (sock,) = config.sockets
    assert sock.name == "web"
    assert (sock.host, sock.port, sock.backlog) == ("127.0.0.1", 8888, 10)
    assert (sock.family, sock.type, sock.proto) == ("AF_INET6", "SOCK_DGRAM", "udp")
    assert sock.so_reuseport is True


def test_socket_umask_is_octal(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[socket:s]\npath = /tmp/x.sock\numask = 077\n")
    assert config.sockets[0].umask == 0o77
    assert config.sockets[0].umask != 77


def test_socket_umask_default_is_0o077(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[socket:s]\npath = /tmp/x.sock\n")
    assert config.sockets[0].umask == 0o077


def test_socket_umask_that_is_not_octal_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[socket:s]\npath = /tmp/x.sock\numask = 089\n")
    assert str(err).startswith(f"{path}:3 [socket:s] umask: expected an octal mode")


def test_socket_path_implies_unix_family(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[socket:s]\npath = /run/app.sock\n")
    assert config.sockets[0].family == "AF_UNIX"


def test_socket_path_with_inet_family_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:s]\npath = /run/a.sock\nfamily = AF_INET\n")
    assert err.key == "family"
    assert "path is set, so the socket is AF_UNIX" in str(err)


def test_unix_socket_without_path_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:s]\nfamily = AF_UNIX\n")
    assert "needs a path" in str(err)


def test_unknown_socket_family_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:s]\nfamily = AF_APPLETALK\n")
    assert "expected one of AF_INET, AF_INET6, AF_UNIX" in str(err)


def test_unknown_socket_type_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[socket:s]\ntype = SOCK_FANCY\n")
    assert str(err).startswith(f"{path}:2 [socket:s] type: expected one of")


def test_unknown_protocol_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:s]\nproto = nosuchproto\n")
    assert "unknown protocol 'nosuchproto'" in str(err)


def test_socket_names_are_unique_regardless_of_case(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:Web]\nport = 1\n[socket:web]\nport = 2\n")
    assert "duplicate socket name" in str(err)


def test_plugin_section_keeps_other_keys_as_text(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [plugin:flapping]
        use = circus.plugins.flapping.Flapping
        retry_in = 3
        max_retry = 2
        """,
    )
    (plugin,) = config.plugins
    assert plugin.name == "flapping"
    assert plugin.use == "circus.plugins.flapping.Flapping"
    assert plugin.options == {"retry_in": "3", "max_retry": "2"}


def test_plugin_without_use_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[plugin:p]\nfoo = 1\n")
    assert str(err).startswith(f"{path}:1 [plugin:p]: missing required option use")


def test_plugin_use_must_be_a_dotted_path(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[plugin:p]\nuse = not a path\n")
    assert err.key == "use"
    assert "dotted Python path" in str(err)


def test_unknown_section_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[wacher:web]\ncmd = x\n")
    assert str(err).startswith(f"{path}:1 [wacher:web]: unknown section")
    assert "did you mean 'watcher'?" in str(err)


def test_section_kind_in_upper_case_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[Watcher:web]\ncmd = x\n")
    assert "did you mean [watcher:web]?" in str(err)


def test_default_section_has_no_special_meaning(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[DEFAULT]\ncmd = x\n")
    assert "unknown section" in str(err)


# -- [circus] ---------------------------------------------------------------------


def test_circus_section(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [circus]
        endpoint = tcp://127.0.0.1:7555
        pubsub_endpoint = tcp://127.0.0.1:7556
        check_delay = 2
        umask = 022
        loglevel = DEBUG
        logoutput = -
        debug = yes
        """,
    )
    circus = config.circus
    assert circus.endpoint == "tcp://127.0.0.1:7555"
    assert circus.pubsub_endpoint == "tcp://127.0.0.1:7556"
    assert circus.check_delay == 2.0
    assert circus.umask == 0o22
    assert circus.loglevel == "debug"
    assert circus.debug is True


def test_relative_ipc_endpoint_is_resolved_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    path = write(
        tmp_path, "etc/circus.ini", "[circus]\nendpoint = ipc://run/ctl.sock\n"
    )
    config = load(path, ENV)
    assert config.circus.endpoint == f"ipc://{tmp_path}/etc/run/ctl.sock"


def test_absolute_ipc_endpoint_is_kept(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nendpoint = ipc:///run/circus/ctl.sock\n")
    assert config.circus.endpoint == "ipc:///run/circus/ctl.sock"


def test_ipc_path_longer_than_107_bytes_is_an_error(tmp_path: Path) -> None:
    long_path = "/run/suptest/" + "a" * 110 + ".sock"
    path, err = load_error(tmp_path, f"[circus]\nendpoint = ipc://{long_path}\n")
    message = str(err)
    assert message.startswith(f"{path}:2 [circus] endpoint: ")
    assert long_path in message
    assert "107 bytes" in message


def test_ipc_path_of_exactly_107_bytes_is_accepted(tmp_path: Path) -> None:
    exact = "/" + "b" * 106
    config = load_text(tmp_path, f"[circus]\nendpoint = ipc://{exact}\n")
    assert config.circus.endpoint == f"ipc://{exact}"


def test_relative_ipc_path_counts_after_resolution(tmp_path: Path) -> None:
    relative = "c" * (107 - len(str(tmp_path)))  # short, but too long once joined
    _, err = load_error(tmp_path, f"[circus]\npubsub_endpoint = ipc://{relative}\n")
    assert "107 bytes" in str(err)


def test_unix_socket_path_limit_is_107_bytes(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[socket:s]\npath = /" + "d" * 120 + "\n")
    assert err.key == "path"
    assert "the limit is 107 bytes" in str(err)


def test_relative_socket_path_is_resolved(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[socket:s]\npath = run/app.sock\n")
    assert config.sockets[0].path == str(tmp_path / "run/app.sock")


def test_non_loopback_tcp_endpoint_is_accepted_for_now(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nendpoint = tcp://0.0.0.0:5555\n")
    assert config.circus.endpoint == "tcp://0.0.0.0:5555"


def test_endpoint_with_an_unknown_scheme_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\nendpoint = http://127.0.0.1:5555\n")
    assert "expected tcp://HOST:PORT or ipc://PATH" in str(err)


def test_tcp_endpoint_without_port_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\nendpoint = tcp://127.0.0.1\n")
    assert "expected tcp://HOST:PORT" in str(err)


def test_two_endpoints_on_one_address_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\npubsub_endpoint = tcp://127.0.0.1:5555\n")
    assert err.key == "pubsub_endpoint"
    assert "is also the endpoint" in str(err)


def test_stats_endpoint_turns_statsd_on_as_circus_does(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nstats_endpoint = tcp://127.0.0.1:7557\n")
    assert config.circus.statsd is True


def test_multicast_is_off_unless_set(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nmulticast_endpoint =\n")
    assert config.circus.multicast_endpoint is None


def test_relative_pidfile_and_logoutput_are_resolved(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\npidfile = run/c.pid\nlogoutput = c.log\n")
    assert config.circus.pidfile == str(tmp_path / "run/c.pid")
    assert config.circus.logoutput == str(tmp_path / "c.log")


def test_syslog_logoutput_is_kept(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[circus]\nlogoutput = syslog:///dev/log?local0\n")
    assert config.circus.logoutput == "syslog:///dev/log?local0"


def test_httpd_false_is_accepted(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[circus]\nhttpd = false\n").circus.httpd is False


def test_loggerconfig_is_refused(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\nloggerconfig = logging.ini\n")
    assert err.key == "loggerconfig"
    assert "not supported" in str(err)


def test_unknown_loglevel_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\nloglevel = chatty\n")
    assert "expected one of critical, error, warning, info, debug" in str(err)


def test_unknown_circus_option_names_the_closest(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[circus]\n\nendpont = tcp://127.0.0.1:1\n")
    assert str(err) == (
        f"{path}:3 [circus] endpont: unknown option for a [circus] section "
        "(did you mean 'endpoint'?)"
    )


def test_endpoint_owner_must_exist(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\nendpoint_owner = no-such-user-circusd\n")
    assert "unknown user 'no-such-user-circusd'" in str(err)


# -- watcher errors -------------------------------------------------------------


def test_unknown_watcher_option_names_file_line_section_key_and_suggestion(
    tmp_path: Path,
) -> None:
    path, err = load_error(
        tmp_path,
        """
        [watcher:web]
        cmd = app
        numprocess = 4
        """,
    )
    assert (err.path, err.line, err.section, err.key) == (
        path,
        3,
        "watcher:web",
        "numprocess",
    )
    assert str(err) == (
        f"{path}:3 [watcher:web] numprocess: unknown option for a [watcher] "
        "section (did you mean 'numprocesses'?)"
    )


def test_option_in_wrong_case_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\nCMD = app\n")
    assert err.key == "CMD"
    assert "did you mean 'cmd'?" in str(err)


def test_misspelt_stream_prefix_is_not_taken_as_a_plugin_setting(
    tmp_path: Path,
) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nstdout_strem.class = File\n")
    assert err.key == "stdout_strem.class"
    assert "did you mean 'stdout_stream'?" in str(err)


def test_unknown_stream_option_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nstdout_stream.filname = x\n")
    assert "unknown stream option 'filname' (did you mean 'filename'?)" in str(err)


def test_unknown_hook_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nhooks.before_strat = m.f\n")
    assert "did you mean 'before_start'?" in str(err)


def test_hook_target_must_be_a_dotted_path(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nhooks.before_start = nodots\n")
    assert err.key == "hooks.before_start"
    assert "dotted Python path" in str(err)


def test_unknown_rlimit_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nrlimit_nofiles = 10\n")
    assert "unknown resource limit 'nofiles'" in str(err)


def test_wrong_type_names_the_expected_type_and_location(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nnumprocesses = many\n")
    assert str(err) == (
        f"{path}:3 [watcher:w] numprocesses: expected an integer, got 'many'"
    )


def test_wrong_boolean_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nrespawn = sometimes\n")
    assert "expected a boolean" in str(err)


def test_unknown_signal_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nstop_signal = SIGNOPE\n")
    assert "unknown signal 'SIGNOPE'" in str(err)


def test_missing_cmd_is_an_error_at_the_section(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[circus]\n[watcher:w]\nnumprocesses = 2\n")
    assert str(err).startswith(f"{path}:2 [watcher:w]: missing required option cmd")


def test_empty_cmd_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, '[watcher:w]\ncmd = ""\n')
    assert err.key == "cmd"
    assert "cmd is empty" in str(err)


def test_cmd_with_unbalanced_quotes_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = sh -c 'echo\n")
    assert err.key == "cmd"
    assert "cannot split cmd" in str(err)


def test_singleton_with_more_than_one_process_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(
        tmp_path, "[watcher:w]\ncmd = a\nsingleton = true\nnumprocesses = 2\n"
    )
    assert str(err).startswith(f"{path}:4 [watcher:w] numprocesses: ")
    assert "singleton" in str(err)


def test_watcher_names_are_unique_regardless_of_case(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[watcher:Web]\ncmd = a\n[watcher:web]\ncmd = b\n")
    assert str(err).startswith(f"{path}:3 [watcher:web]: duplicate watcher name")
    assert f"{path}:1" in str(err)


@pytest.mark.parametrize("name", ["my.app", "my app", ""])
def test_watcher_name_with_dot_or_space_or_nothing_is_an_error(
    tmp_path: Path, name: str
) -> None:
    _, err = load_error(tmp_path, f"[watcher:{name}]\ncmd = a\n")
    assert "name" in str(err)
    assert err.section == f"watcher:{name}"


def test_stdin_socket_must_be_defined(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nstdin_socket = nope\n")
    assert err.key == "stdin_socket"
    assert "no [socket:nope] section" in str(err)


def test_stdin_socket_naming_a_socket_is_accepted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "[socket:In]\nport = 0\n[watcher:w]\ncmd = a\nstdin_socket = in\n"
    )
    assert config.watchers[0].stdin_socket == "in"


def test_unknown_user_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nuid = no-such-user-xyz\n")
    assert str(err) == f"{path}:3 [watcher:w] uid: unknown user 'no-such-user-xyz'"


def test_unknown_group_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\ngid = no-such-group-xyz\n")
    assert err.key == "gid"
    assert "unknown group 'no-such-group-xyz'" in str(err)


def test_known_user_and_group_by_name(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watcher:w]\ncmd = a\nuid = root\ngid = root\n")
    assert (config.watchers[0].uid, config.watchers[0].gid) == ("root", "root")


def test_uid_zero_is_a_value_not_unset(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watcher:w]\ncmd = a\nuid = 0\ngid = 0\n")
    assert (config.watchers[0].uid, config.watchers[0].gid) == (0, 0)


def test_numeric_uid_without_passwd_entry_needs_a_gid(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = a\nuid = 3999999\n")
    assert "has no passwd entry" in str(err)
    config = load_text(tmp_path, "[watcher:w]\ncmd = a\nuid = 3999999\ngid = 3999999\n")
    assert config.watchers[0].uid == 3999999


def test_relative_working_dir_and_stream_filename_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    path = write(
        tmp_path,
        "conf/circus.ini",
        """
        [watcher:w]
        cmd = a
        working_dir = app
        stdout_stream.class = FileStream
        stdout_stream.filename = logs/w.out
        stderr_stream.class = FileStream
        stderr_stream.filename = /var/log/w.err
        """,
    )
    (w,) = load(path, ENV).watchers
    assert w.working_dir == str(tmp_path / "conf/app")
    assert w.stdout_stream["filename"] == str(tmp_path / "conf/logs/w.out")
    assert w.stderr_stream["filename"] == "/var/log/w.err"


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = conf.d/*.ini\n")
    included = write(tmp_path, "conf.d/w.ini", "[watcher:w]\ncmd = a\nprioriti = 1\n")
    with pytest.raises(ConfigError) as info:
        load(main, ENV)
    assert str(info.value).startswith(f"{included}:3 [watcher:w] prioriti: ")
    assert "did you mean 'priority'?" in str(info.value)


def test_included_watcher_is_loaded(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude_dir = conf.d\n")
    write(tmp_path, "conf.d/w.ini", "[watcher:w]\ncmd = a\n[env:w]\nX = 1\n")
    (w,) = load(main, ENV).watchers
    assert w.env == {"X": "1"}


def test_working_dir_dot_is_the_config_directory(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watcher:w]\ncmd = a\nworking_dir = .\n")
    assert config.watchers[0].working_dir == str(tmp_path)


def test_dot_parts_are_dropped_from_relative_paths(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[socket:s]\npath = ./run/./s.sock\n")
    assert config.sockets[0].path == str(tmp_path / "run/s.sock")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "stdout_stream.class = FileStrem\nstdout_stream.filename = o.log",
            "did you mean 'FileStream'",
        ),
        ("stdout_stream.class = no such.class", "unknown stream class"),
        (
            "stdout_stream.class = JournalStream\nstdout_stream.priority = loud",
            "priority",
        ),
        ("stdout_stream.class = SyslogStream\nstdout_stream.facility = 99", "facility"),
        (
            "stdout_stream.class = FancyStdoutStream\nstdout_stream.color = pink",
            "unknown color",
        ),
        ("stderr_stream.class = FileStream", "FileStream needs a filename"),
        (
            "stdout_stream.class = FileStream\nstdout_stream.filename = o.log\n"
            "stdout_stream.max_bytes = lots",
            "max_bytes",
        ),
    ],
)
def test_stream_settings_are_checked_at_load(
    tmp_path: Path, lines: str, expected: str
) -> None:
    _, error = load_error(tmp_path, f"[watcher:w]\ncmd = sleep 1\n{lines}\n")
    assert expected in str(error)
    assert error.section == "watcher:w" and error.line is not None


def test_a_custom_stream_class_from_the_config_file_takes_its_own_keys(
    tmp_path: Path,
) -> None:
    # Only the config file may name one (add and set refuse it); the class
    # is loaded when the watcher is built, as hooks are.
    config = load_text(
        tmp_path,
        "[watcher:w]\ncmd = sleep 1\nstdout_stream.class = mylogs.Shipper\n"
        "stdout_stream.host = logs.example\n",
    )
    assert config.watchers[0].stdout_stream == {
        "class": "mylogs.Shipper",
        "host": "logs.example",
    }


def test_a_built_in_stream_class_refuses_an_unknown_key(tmp_path: Path) -> None:
    _, error = load_error(
        tmp_path,
        "[watcher:w]\ncmd = sleep 1\nstdout_stream.class = circus.stream.FileStream\n"
        "stdout_stream.filename = o.log\nstdout_stream.host = x\n",
    )
    assert "unknown stream option 'host'" in str(error)
