"""Watcher environments and config-time variables ($NAME, $(circus.env.X))."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from circusd.config.loader import load
from circusd.config.model import Config
from circusd.errors import ConfigError
from circusd.process import SpawnRequest, build_env
from circusd.users import KEEP

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SECRET": "foo$BAR%2Bx"}


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def load_text(directory: Path, text: str, environ: dict[str, str] = ENV) -> Config:
    return load(write(directory, "circus.ini", text), environ)


def load_error(directory: Path, text: str) -> tuple[str, ConfigError]:
    path = write(directory, "circus.ini", text)
    with pytest.raises(ConfigError) as info:
        load(path, ENV)
    return path, info.value


B24 = """
[watcher:w]
cmd = sh -c 'env > /tmp/suptest/b24.env; sleep 300'
copy_env = True
[env:w]
B = x1it%2BTV
C = k=v,more
D = héllo
"""


# -- B24: values arrive exactly, undefined variables are errors -----------------


def test_written_values_arrive_exactly(tmp_path: Path) -> None:
    (w,) = load_text(tmp_path, B24).watchers
    assert w.env == {"B": "x1it%2BTV", "C": "k=v,more", "D": "héllo"}


def test_inherited_values_are_left_to_spawn_time(tmp_path: Path) -> None:
    (w,) = load_text(tmp_path, B24).watchers
    assert w.copy_env is True
    assert "SECRET" not in w.env  # copied, unexpanded, when a process starts


def test_environment_reaches_a_real_process_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET", "foo$BAR%2Bx")
    (w,) = load(write(tmp_path, "circus.ini", B24)).watchers
    request = SpawnRequest(w, 1, KEEP, {}, None, False, False)
    result = subprocess.run(
        ["/usr/bin/env"],
        env=build_env(request),
        capture_output=True,
        timeout=10,
        check=True,
    )
    lines = result.stdout.splitlines()
    for expected in ("SECRET=foo$BAR%2Bx", "B=x1it%2BTV", "C=k=v,more", "D=héllo"):
        assert expected.encode() in lines


def test_undefined_dollar_name_is_an_error_naming_variable_and_line(
    tmp_path: Path,
) -> None:
    path, err = load_error(tmp_path, B24 + "A = foo$UNDEFINED_VAR_X\n")
    assert str(err).startswith(f"{path}:8 [env:w] A: ")
    assert "UNDEFINED_VAR_X" in str(err)


def test_undefined_circus_env_variable_is_an_error_naming_it_and_line(
    tmp_path: Path,
) -> None:
    path, err = load_error(tmp_path, B24 + "E = $(circus.env.NOPE)\n")
    assert str(err).startswith(f"{path}:8 [env:w] E: ")
    assert "NOPE" in str(err)


def test_double_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    (w,) = load_text(tmp_path, B24 + "A = foo$$UNDEFINED_VAR_X pa$$$$word\n").watchers
    assert w.env["A"] == "foo$UNDEFINED_VAR_X pa$$word"


def test_dollar_before_a_lower_case_name_is_kept(tmp_path: Path) -> None:
    (w,) = load_text(tmp_path, B24 + "A = p$ssw0rd $1 $Mixed end$\n").watchers
    assert w.env["A"] == "p$ssw0rd $1 $Mixed end$"


def test_dollar_name_comes_from_the_real_environment(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [env]
        PATH = $PATH:/opt/bin
        GREETING = hello $HOME
        [watcher:w]
        cmd = a
        """,
    )
    assert config.watchers[0].env == {
        "PATH": "/usr/bin:/bin:/opt/bin",
        "GREETING": "hello /root",
    }


def test_expanded_text_is_not_expanded_again(tmp_path: Path) -> None:
    environ = {"TRICK": "$HOME and $(circus.env.HOME)", "HOME": "/root"}
    config = load_text(
        tmp_path,
        "[env]\nA = $TRICK\nB = $(circus.env.TRICK)\n[watcher:w]\ncmd = a\n",
        environ,
    )
    assert config.watchers[0].env == {
        "A": "$HOME and $(circus.env.HOME)",
        "B": "$HOME and $(circus.env.HOME)",
    }


# -- layers ---------------------------------------------------------------------


def test_without_copy_env_only_config_values_are_passed(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[env]\nA = 1\n[watcher:w]\ncmd = a\n")
    assert config.watchers[0].env == {"A": "1"}


def test_copy_env_does_not_put_circusd_environment_in_the_config(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path, "[env]\nHOME = /srv\n[watcher:w]\ncmd = a\ncopy_env = true\n"
    )
    assert config.watchers[0].env == {"HOME": "/srv"}


def test_env_patterns_match_watcher_names_and_later_sections_win(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        """
        [env]
        LEVEL = global
        SHARED = yes
        [watcher:web-1]
        cmd = a
        [watcher:web-2]
        cmd = a
        [watcher:worker]
        cmd = a
        [env:web-*]
        LEVEL = web
        [env:web-2, worker]
        LEVEL = special
        """,
    )
    envs = {w.name: w.env for w in config.watchers}
    assert envs["web-1"] == {"LEVEL": "web", "SHARED": "yes"}
    assert envs["web-2"] == {"LEVEL": "special", "SHARED": "yes"}
    assert envs["worker"] == {"LEVEL": "special", "SHARED": "yes"}


def test_env_section_value_can_refer_to_layers_below(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [env]
        BASE = /srv
        [env:w]
        DATA = $(circus.env.BASE)/data
        LOGS = ((circus.env.base))/logs
        [watcher:w]
        cmd = a
        """,
    )
    assert config.watchers[0].env == {
        "BASE": "/srv",
        "DATA": "/srv/data",
        "LOGS": "/srv/logs",
    }


def test_watcher_env_option_is_merged_last(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "[env:w]\nA = 1\nB = 2\n[watcher:w]\ncmd = a\nenv = B=3,C=$(circus.env.A)\n",
    )
    assert config.watchers[0].env == {"A": "1", "B": "3", "C": "1"}


def test_env_section_matching_no_watcher_is_still_checked(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[env:ghost]\nA = $NOT_DEFINED_ANYWHERE\n")
    assert err.section == "env:ghost"
    assert "NOT_DEFINED_ANYWHERE" in str(err)


def test_env_name_with_whitespace_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[env]\nMY VAR = 1\n")
    assert "invalid environment variable name 'MY VAR'" in str(err)


def test_config_environ_holds_the_expanded_env_section(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[env]\nA = $HOME/x\n")
    assert config.environ == {"A": "/root/x"}


# -- $(circus.env.X) in other sections ------------------------------------------


def test_circus_env_lookup_order_is_watcher_env_then_env_then_environment(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        """
        [env]
        WHERE = env
        [env:a]
        WHERE = env-a
        [watcher:a]
        cmd = run $(circus.env.where)
        [watcher:b]
        cmd = run $(circus.env.WHERE) $(circus.env.HOME)
        """,
    )
    cmds = {w.name: w.cmd for w in config.watchers}
    assert cmds == {"a": "run env-a", "b": "run env /root"}


def test_circus_env_works_in_circus_socket_and_plugin_sections(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        """
        [env]
        PORT = 7555
        [circus]
        endpoint = tcp://127.0.0.1:$(circus.env.PORT)
        pidfile = ((CIRCUS.ENV.HOME))/circus.pid
        [socket:s]
        port = $(circus.env.port)
        [plugin:p]
        use = pkg.Plugin
        where = $(circus.env.HOME)
        """,
    )
    assert config.circus.endpoint == "tcp://127.0.0.1:7555"
    assert config.circus.pidfile == "/root/circus.pid"
    assert config.sockets[0].port == 7555
    assert config.plugins[0].options == {"where": "/root"}


def test_undefined_circus_env_in_a_watcher_option_is_an_error(tmp_path: Path) -> None:
    path, err = load_error(
        tmp_path, "[watcher:w]\ncmd = a\nworking_dir = $(circus.env.NODIR)\n"
    )
    assert str(err).startswith(
        f"{path}:3 [watcher:w] working_dir: undefined variable NODIR"
    )


def test_undefined_circus_env_in_circus_section_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[circus]\npidfile = $(circus.env.NOPE)/x.pid\n")
    assert err.key == "pidfile"
    assert "undefined variable NOPE" in str(err)


def test_include_can_use_circus_env_from_the_environment(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = $(circus.env.SUB)/*.ini\n")
    write(tmp_path, "conf/w.ini", "[watcher:w]\ncmd = a\n")
    config = load(main, {"SUB": "conf"})
    assert [w.name for w in config.watchers] == ["w"]


def test_percent_in_any_value_is_literal(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watcher:w]\ncmd = date +%s%%\nargs = %(x)s\n")
    assert (config.watchers[0].cmd, config.watchers[0].args) == ("date +%s%%", "%(x)s")


# -- spawn-time variables, checked at load ----------------------------------------


def test_spawn_time_variables_are_kept_in_cmd_and_args(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [socket:web]
        port = 0
        [watcher:w]
        cmd = app --fd $(circus.sockets.web) --id ((circus.wid))
        args = --n $(circus.numprocesses) $WID
        """,
    )
    (w,) = config.watchers
    assert w.cmd == "app --fd $(circus.sockets.web) --id ((circus.wid))"
    assert w.args == "--n $(circus.numprocesses) $WID"


def test_socket_reference_must_name_a_defined_socket(tmp_path: Path) -> None:
    path, err = load_error(
        tmp_path, "[watcher:w]\ncmd = app --fd $(circus.sockets.web)\n"
    )
    assert str(err).startswith(f"{path}:2 [watcher:w] cmd: ")
    assert "no [socket:web] section" in str(err)


def test_socket_reference_is_case_insensitive(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "[socket:Web]\nport = 0\n[watcher:w]\ncmd = a $(circus.sockets.WEB)\n"
    )
    assert config.watchers[0].cmd == "a $(circus.sockets.WEB)"


def test_unknown_circus_variable_in_cmd_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[watcher:w]\ncmd = app $(circus.numprocess)\n")
    assert err.key == "cmd"
    assert "unknown variable $(circus.numprocess)" in str(err)
    assert "did you mean 'numprocesses'?" in str(err)


def test_spawn_time_variable_outside_cmd_and_args_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(
        tmp_path,
        "[watcher:w]\ncmd = a\nstdout_stream.class = FileStream\n"
        "stdout_stream.filename = /tmp/out-$(circus.wid).log\n",
    )
    assert err.key == "stdout_stream.filename"
    assert "cannot be used here" in str(err)


def test_spawn_time_variable_in_env_value_is_an_error(tmp_path: Path) -> None:
    _, err = load_error(tmp_path, "[env]\nID = $(circus.wid)\n")
    assert err.key == "ID"
    assert "cannot be used in an environment value" in str(err)
