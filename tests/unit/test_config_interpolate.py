"""Spawn-time expansion of cmd/args, and the sockets a watcher uses."""

from __future__ import annotations

import pytest

from circusd.config.interpolate import referenced_sockets, spawn_text
from circusd.config.model import WatcherConfig
from circusd.errors import ValueProblem


def expand(template: str) -> str:
    return spawn_text(
        template,
        wid=3,
        sockets={"web": 5, "admin": 7},
        env={"PATH": "/bin", "Token": "t$(circus.wid)"},
        options={"numprocesses": 4, "name": "w", "shell": False, "uid": None},
    )


def test_wid_in_both_spellings_and_any_case() -> None:
    assert expand("x $(circus.wid) ((circus.wid)) $(CIRCUS.WID)") == "x 3 3 3"


def test_deprecated_dollar_wid_is_expanded_only_as_a_whole_word() -> None:
    assert expand("--id $WID $WIDTH $wid") == "--id 3 $WIDTH $wid"


def test_sockets_expand_to_their_fd_number() -> None:
    assert expand("--fd $(circus.sockets.web) --admin ((circus.sockets.ADMIN))") == (
        "--fd 5 --admin 7"
    )


def test_env_variables_are_looked_up_without_regard_to_case() -> None:
    assert expand("$(circus.env.path)") == "/bin"


def test_options_expand_to_their_value() -> None:
    assert expand("-n $(circus.numprocesses) $(circus.name)") == "-n 4 w"


def test_expanded_text_is_not_expanded_again() -> None:
    assert expand("$(circus.env.token)") == "t$(circus.wid)"


def test_text_without_variables_is_unchanged() -> None:
    text = "sh -c 'echo $$ $HOME ((1+2)) $(date)'"
    assert expand(text) == text


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("$(circus.sockets.nope)", "nope"),
        ("$(circus.env.NOPE)", "NOPE"),
        ("$(circus.whatever)", "whatever"),
    ],
)
def test_undefined_variable_is_an_error_naming_it(template: str, named: str) -> None:
    with pytest.raises(ValueProblem, match=named):
        expand(template)


def test_referenced_sockets_come_from_cmd_args_and_stdin_socket() -> None:
    watcher = WatcherConfig(
        name="w",
        cmd="app --fd $(circus.sockets.Web)",
        args=("--x", "((circus.sockets.admin))"),
        shell_args="$(circus.sockets.extra)",
        stdin_socket="Input",
    )
    assert referenced_sockets(watcher) == {"web", "admin", "extra", "input"}


def test_watcher_without_socket_references_uses_none() -> None:
    watcher = WatcherConfig(
        name="w", cmd="app $(circus.wid)", args="--a $(circus.env.X)"
    )
    assert referenced_sockets(watcher) == set()
