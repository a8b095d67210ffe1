"""The words of circusd's permission refusals, which clients (circusctl,
the web console) show as they are."""

from __future__ import annotations

import pytest

from circusd.control.auth import Caller
from circusd.control.policy import PermissionDenied, Policy

POLICY = Policy(daemon_uid=0, owner_uid=4000001)
STRANGER = Caller(uid=4000002, transport="ipc")


def refusal(command: str, properties: dict[str, object]) -> str:
    with pytest.raises(PermissionDenied) as info:
        POLICY.authorize(STRANGER, command, properties)
    return str(info.value)


def test_a_refused_restart_of_one_watcher_names_the_command() -> None:
    message = refusal("restart", {"name": "web"})
    assert "'restart' needs root or the endpoint owner" in message
    assert "without a name" not in message


def test_a_refused_restart_of_everything_says_it_had_no_name() -> None:
    message = refusal("restart", {})
    assert "'restart without a name' needs root or circusd's own user" in message


def test_other_admin_commands_keep_their_own_name() -> None:
    assert "'quit' needs root or circusd's own user" in refusal("quit", {})
