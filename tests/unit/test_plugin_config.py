"""[plugin:NAME] sections: the process keys, the shipped plugins' options,
and the settings document a plugin process receives."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from circusd.config import plugin_options as catalog
from circusd.config.loader import load
from circusd.config.model import Config
from circusd.errors import ConfigError, ValueProblem
from circusd.plugin_watchers import connect_address, printable, watcher_config
from circusd.plugins.base import PluginError, Settings, read_options

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root"}


def load_text(directory: Path, text: str) -> Config:
    path = directory / "circus.ini"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load(str(path), ENV)


def load_error(directory: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(directory, text)
    return str(info.value)


def test_process_keys_are_read_and_still_given_to_the_plugin(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [plugin:stats]
        use = circus.plugins.statsd.StatsdEmitter
        priority = 7
        active = false
        max_retry = -1
        uid = root
        port = 9125
        """,
    )
    (plugin,) = config.plugins
    assert (plugin.priority, plugin.active, plugin.max_retry, plugin.uid) == (
        7,
        False,
        -1,
        "root",
    )
    assert plugin.options["port"] == "9125"
    assert plugin.options["priority"] == "7"


def test_shipped_plugin_option_typo_is_an_error_at_its_line(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        [plugin:stats]
        use = circus.plugins.statsd.StatsdEmitter
        prot = 9125
        """,
    )
    assert message.startswith(f"{tmp_path}/circus.ini:3 [plugin:stats] prot: ")
    assert "unknown option for statsd.StatsdEmitter (did you mean 'port'?)" in message


def test_shipped_plugin_value_of_the_wrong_type_is_an_error(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        [plugin:dog]
        use = circus.plugins.watchdog.WatchDog
        loop_rate = soon
        """,
    )
    assert "[plugin:dog] loop_rate: expected a number, got 'soon'" in message


def test_resource_watcher_needs_a_watcher(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        [plugin:res]
        use = circus.plugins.resource_watcher.ResourceWatcher
        max_mem = 250M
        """,
    )
    assert "missing required option watcher for resource_watcher" in message


def test_our_own_names_for_shipped_plugins_are_checked_too(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        [plugin:res]
        use = circusd.plugins.resource_watcher.ResourceWatcher
        watcher = web
        max_mem = lots
        """,
    )
    assert "max_mem: expected a percentage such as 90 or a size" in message


def test_custom_plugin_options_are_left_to_the_plugin(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [plugin:mine]
        use = mypackage.plugins.Mine
        anything = goes here
        """,
    )
    assert config.plugins[0].options == {"anything": "goes here"}


def test_unknown_user_for_a_plugin_is_an_error(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """
        [plugin:mine]
        use = mypackage.plugins.Mine
        uid = no-such-user-here
        """,
    )
    assert "[plugin:mine] uid: unknown user 'no-such-user-here'" in message


def test_watcher_names_starting_with_plugin_are_reserved(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[watcher:plugin:x]\ncmd = sleep 1\n")
    assert "names starting with 'plugin:' belong to the [plugin:NAME]" in message


def test_flapping_options_are_accepted_and_checked_for_typos(tmp_path: Path) -> None:
    load_text(
        tmp_path,
        """
        [plugin:flapping]
        use = circus.plugins.flapping.Flapping
        attempts = 2
        window = 1
        retry_in = 3
        max_retry = 5
        """,
    )
    message = load_error(
        tmp_path,
        """
        [plugin:flapping]
        use = circus.plugins.flapping.Flapping
        atempts = 2
        """,
    )
    assert "(did you mean 'attempts'?)" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250M", 250 << 20),
        ("1.5G", int(1.5 * (1 << 30))),
        ("512k", 512 << 10),
        ("100MB", 100 << 20),
        ("4096", 4096),
        ("12.0B", 12),
    ],
)
def test_byte_sizes(text: str, expected: int) -> None:
    assert catalog.byte_size(text) == expected


def test_memory_limit_is_a_percentage_or_a_size() -> None:
    assert catalog.memory_limit("90") == catalog.MemoryLimit(90.0, percent=True)
    assert catalog.memory_limit("250M") == catalog.MemoryLimit(250 << 20, False)
    with pytest.raises(ValueProblem):
        catalog.memory_limit("much")


def test_heartbeat_regex_needs_a_pid_group() -> None:
    with pytest.raises(ValueProblem, match="no \\(\\?P<pid>"):
        catalog.heartbeat_regex("^(?P<id>\\d+)$")


def test_plugin_watcher_runs_the_runner_with_no_settings_on_its_command_line(
    tmp_path: Path,
) -> None:
    config = load_text(
        tmp_path,
        """
        [plugin:stats]
        use = circus.plugins.statsd.StatsdEmitter
        application_name = has spaces and 'quotes'
        """,
    )
    watcher = watcher_config(config.plugins[0])
    assert watcher.name == "plugin:stats"
    assert watcher.args == ("-P", "-m", "circusd.plugins")  # -P: nothing from the cwd
    assert watcher.singleton and watcher.priority == 1
    assert "spaces" not in watcher.cmd + " ".join(watcher.args)


def test_settings_round_trip_through_json() -> None:
    settings = Settings(
        name="stats",
        use="circus.plugins.statsd.StatsdEmitter",
        endpoint="ipc:///run/c.sock",
        pubsub_endpoint="ipc:///run/p.sock",
        options={"application_name": "a b"},
    )
    assert Settings.from_json(settings.to_json()) == settings


_GOOD = '"format": 1, "name": "x", "use": "a.B", "endpoint": "ipc:///c", '
_GOOD += '"pubsub_endpoint": "ipc:///p"'


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1, "name": "x"}',
        ("{" + _GOOD + ', "loglevel": 5}').encode(),
        ("{" + _GOOD + ', "timeout": 0}').encode(),
        ("{" + _GOOD + ', "options": {"a": 1}}').encode(),
        ("{" + _GOOD + ', "surprise": 1}').encode(),
    ],
)
def test_bad_settings_are_a_permanent_error(document: bytes) -> None:
    with pytest.raises(PluginError) as info:
        Settings.from_json(document)
    assert info.value.permanent


def test_read_options_converts_fills_defaults_and_refuses_unknown_keys() -> None:
    table = catalog.BUILTINS["statsd.StatsdEmitter"].options
    config = read_options(table, {"port": "9125", "priority": "3"})
    assert config["port"] == 9125 and config["host"] == "localhost"
    assert "priority" not in config
    with pytest.raises(PluginError, match="unknown option 'hots'.*'host'"):
        read_options(table, {"hots": "x"})
    with pytest.raises(PluginError, match="option port: expected an integer"):
        read_options(table, {"port": "many"})
    assert read_options(None, {"free": "text", "uid": "x"}) == {"free": "text"}


def test_connect_address_turns_wildcards_into_loopback() -> None:
    assert connect_address("tcp://*:5555", "tcp://0.0.0.0:5555") == (
        "tcp://127.0.0.1:5555"
    )
    assert connect_address("tcp://127.0.0.1:*", "tcp://127.0.0.1:40001") == (
        "tcp://127.0.0.1:40001"
    )
    assert connect_address("ipc:///run/c.sock", "ipc:///tmp/x/s") == "ipc:///run/c.sock"


def test_text_from_a_plugin_cannot_start_a_new_log_line() -> None:
    assert printable("one\ntwo\r\x1b[31m", 100) == "one\\ntwo\\r\\x1b[31m"
    assert printable("x" * 50, 10) == "x" * 10
