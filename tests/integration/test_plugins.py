"""Plugins under the real daemon: how they start, get their settings, fail,
stop and follow reloadconfig. The plugins used here are in
tests/programs/sample_plugins.py; the shipped ones have their own tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import textwrap
from pathlib import Path

import psutil
import pytest
import zmq

from circusd.arbiter import Arbiter
from circusd.config.loader import load
from circusd.plugin_watchers import PluginWatcher
from tests.conftest import REPO, ServiceUser, call, wait_for
from tests.integration.plugin_support import (
    ENV,
    PROGRAMS,
    alive,
    failed,
    ready,
    records,
    status,
)

DEBIAN_PYTHON = "/usr/bin/python3"  # with Debian's python3-zmq, -psutil...


def recorder(out: Path, greeting: str = "") -> str:
    return textwrap.dedent(f"""
        [plugin:rec]
        use = sample_plugins.Recorder
        out = {out}
        greeting = {greeting}
        """)


def test_plugin_gets_its_settings_on_stdin_not_on_its_command_line(
    start_daemon, workdir
):
    out = workdir / "rec.jsonl"
    greeting = "hello, world: 'quoted' and  two spaces"
    daemon = start_daemon(
        "[watcher:w]\ncmd = sleep 300\n" + recorder(out, greeting), env=ENV
    )
    pid = ready(daemon, "rec")
    start = wait_for(lambda: records(out), what="the recorder's first line")[0]
    assert start["start"] == greeting
    assert start["pid"] == pid
    argv = psutil.Process(pid).cmdline()
    assert argv[-2:] == ["-m", "circusd.plugins"]
    assert not any("hello" in arg or str(out) in arg for arg in argv)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    # Its log records are written by circusd, under the plugin's name.
    wait_for(
        lambda: (
            f"circusd.plugin.rec: recorder ready greeting={greeting!r}"
            in daemon.output()
        ),
        what="the plugin's log line in circusd's log",
    )


def test_plugin_is_a_watcher_in_list_and_status_and_sees_events(start_daemon, workdir):
    out = workdir / "rec.jsonl"
    daemon = start_daemon("[watcher:w]\ncmd = sleep 300\n" + recorder(out), env=ENV)
    ready(daemon, "rec")
    assert daemon.ok("list")["watchers"] == ["plugin:rec", "w"]
    assert status(daemon, "plugin:rec")["status"] == "active"
    assert daemon.ok("numwatchers")["numwatchers"] == 2
    assert records(out)[0]["watchers"] == ["plugin:rec", "w"]
    daemon.ok("incr", name="w", waiting=True)
    new_pid = max(daemon.pids("w"))
    spawned = wait_for(
        lambda: [
            r
            for r in records(out)
            if r.get("topic") == "watcher.w.spawn"
            and r["event"]["process_pid"] == new_pid
        ],
        what="the spawn event in the plugin",
    )
    assert spawned[0]["event"]["time"] > 0


def test_plugin_commands_set_and_add_are_refused_start_and_stop_work(
    start_daemon, workdir
):
    out = workdir / "rec.jsonl"
    daemon = start_daemon(recorder(out), env=ENV)
    pid = ready(daemon, "rec")
    refused = daemon.call("set", name="plugin:rec", options={"cmd": "sleep 1"})
    assert refused["status"] == "error"
    assert "is a plugin: change its [plugin:rec] section" in refused["reason"]
    added = daemon.call("add", name="plugin:x", cmd="sleep 300")
    assert added["status"] == "error" and "belong to the config file" in added["reason"]
    daemon.ok("stop", name="plugin:rec", waiting=True)
    assert not alive(pid)
    assert records(out)[-1] == {"stop": pid}
    daemon.ok("start", name="plugin:rec", waiting=True)
    assert ready(daemon, "rec", count=2) != pid


def test_unknown_use_paths_fail_with_their_reason_and_the_rest_keeps_running(
    start_daemon,
):
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300

        [plugin:nosuch]
        use = nosuch_package.module.Thing

        [plugin:http]
        use = circus.plugins.http_observer.HttpObserver

        [plugin:plain]
        use = sample_plugins.NotAPlugin
        """,
        env=ENV,
    )
    assert failed(daemon, "plugin:nosuch") == (
        "cannot import nosuch_package.module: No module named 'nosuch_package'"
    )
    assert "is not one of the plugins circusd ships" in failed(daemon, "plugin:http")
    assert failed(daemon, "plugin:plain") == (
        "sample_plugins.NotAPlugin is not a circusd plugin (a subclass of "
        "circusd.plugins.Plugin)"
    )
    output = daemon.output()
    line = next(
        line for line in output.splitlines() if "section=[plugin:nosuch]" in line
    )
    assert "[ERROR] circusd.plugin_watchers: plugin failed" in line
    lines = daemon.config.read_text().splitlines()
    where = lines.index("[plugin:nosuch]") + 1
    assert f"source={daemon.config}:{where} " in line and "retried=no" in line
    # A reason that cannot change is not retried.
    assert output.count("spawned watcher=plugin:nosuch ") == 1
    assert status(daemon, "w")["status"] == "active"
    reasons = daemon.ok("status")["reasons"]
    assert set(reasons) == {"plugin:nosuch", "plugin:http", "plugin:plain"}


def test_bad_option_of_a_custom_plugin_stops_it_for_good(start_daemon):
    daemon = start_daemon(
        """
        [plugin:strict]
        use = sample_plugins.Strict
        count = many
        """,
        env=ENV,
    )
    assert failed(daemon, "plugin:strict") == (
        "option count: expected an integer, got 'many'"
    )


def test_plugin_crashing_at_init_is_retried_with_backoff_then_failed(start_daemon):
    daemon = start_daemon(
        """
        [plugin:crash]
        use = sample_plugins.CrashAtInit
        max_retry = 2
        """,
        env=ENV,
    )
    reason = failed(daemon, "plugin:crash")
    assert reason.startswith("handle_init failed: RuntimeError: boom at init")
    assert reason.endswith("3 times in a row")
    output = daemon.output()
    assert output.count("spawned watcher=plugin:crash ") == 3
    assert output.count("plugin failed section=[plugin:crash] ") == 3
    assert "RuntimeError: boom at init" in output


def test_crashing_plugin_is_started_again_by_the_restart_policy(start_daemon):
    daemon = start_daemon(
        """
        [plugin:crash]
        use = sample_plugins.CrashLater
        after = 0.2
        max_retry = -1
        """,
        env=ENV,
    )
    first = ready(daemon, "crash")
    second = ready(daemon, "crash", count=2)
    assert second != first and not alive(first)
    assert "process exited watcher=plugin:crash pid=" in daemon.output()
    assert status(daemon, "plugin:crash")["status"] == "active"


def test_flapping_plugin_starts_no_process(start_daemon):
    daemon = start_daemon("""
        [watcher:w]
        cmd = sleep 300

        [plugin:flapping]
        use = circus.plugins.flapping.Flapping
        attempts = 2
        window = 1
        """)
    assert daemon.ok("list")["watchers"] == ["w"]
    lines = [
        line
        for line in daemon.output().splitlines()
        if "plugin not started plugin=flapping" in line
    ]
    assert len(lines) == 1 and "[INFO]" in lines[0]
    assert "built-in restart policy" in lines[0]


def test_plugins_stop_before_the_watchers_and_before_circusd_exits(
    start_daemon, workdir
):
    out = workdir / "rec.jsonl"
    daemon = start_daemon("[watcher:w]\ncmd = sleep 300\n" + recorder(out), env=ENV)
    pid = ready(daemon, "rec")
    daemon.ok("quit", waiting=True)
    assert daemon.wait_exit() == 0
    assert not alive(pid)
    assert records(out)[-1] == {"stop": pid}
    output = daemon.output()
    assert output.index("stopped watcher=plugin:rec") < output.index(
        "stopped watcher=w"
    )


def test_plugin_dies_with_circusd(start_daemon, workdir):
    out = workdir / "rec.jsonl"
    daemon = start_daemon(recorder(out), env=ENV)
    pid = ready(daemon, "rec")
    daemon.process.kill()
    daemon.process.wait()
    wait_for(lambda: not alive(pid), what="the plugin to end with circusd")


def test_reloadconfig_adds_changes_and_removes_plugins(start_daemon, workdir):
    out = workdir / "rec.jsonl"
    daemon = start_daemon("[watcher:w]\ncmd = sleep 300\n", env=ENV)
    config = daemon.config.read_text()

    daemon.config.write_text(config + recorder(out, "first"))
    daemon.ok("reloadconfig", waiting=True)
    first = ready(daemon, "rec")
    assert records(out)[0]["start"] == "first"

    daemon.config.write_text(config + recorder(out, "second"))
    daemon.ok("reloadconfig", waiting=True)
    second = ready(daemon, "rec", count=2)
    assert second != first and not alive(first)
    assert [r["start"] for r in records(out) if "start" in r] == ["first", "second"]

    daemon.config.write_text(config)
    daemon.ok("reloadconfig", waiting=True)
    assert daemon.ok("list")["watchers"] == ["w"]
    wait_for(lambda: not alive(second), what="the removed plugin to stop")


def test_inactive_plugin_is_listed_stopped_until_started(start_daemon, workdir):
    out = workdir / "rec.jsonl"
    daemon = start_daemon(recorder(out) + "active = false\n", env=ENV)
    assert status(daemon, "plugin:rec")["status"] == "stopped"
    daemon.ok("start", name="plugin:rec", waiting=True)
    ready(daemon, "rec")


# -- plugins that run as another user ------------------------------------------


@pytest.mark.root
def test_plugin_with_a_uid_that_may_not_operate_fails_before_it_runs(
    start_daemon, test_user: ServiceUser
):
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = sleep 300

        [plugin:dog]
        use = circus.plugins.watchdog.WatchDog
        uid = {test_user.name}
        """)
    reason = failed(daemon, "plugin:dog")
    assert reason == (
        f"it runs as {test_user.name}, and its requests need root, circusd's own "
        f"user or the endpoint_owner: set endpoint_owner = {test_user.name}, or "
        "remove uid"
    )
    assert "spawned watcher=plugin:dog" not in daemon.output()
    assert status(daemon, "w")["status"] == "active"


@pytest.mark.root
def test_plugin_runs_as_its_uid_when_the_policy_lets_it_in(
    start_daemon, workdir, test_user: ServiceUser
):
    # A plugin runs with circusd's own interpreter, as its uid. The test's
    # interpreter and checkout may sit where that user cannot reach (under
    # /root), so circusd runs from a readable copy with Debian's python3 and
    # its python3-* modules, as the packaged circusd does.
    code = workdir / "code"
    shutil.copytree(REPO / "circusd", code / "circusd")
    shutil.copy(PROGRAMS / "sample_plugins.py", code)
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    out = shared / "rec.jsonl"
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {test_user.name}

        [watcher:w]
        cmd = sleep 300

        [plugin:rec]
        use = sample_plugins.Recorder
        out = {out}
        uid = {test_user.name}
        """,
        env={"PYTHONPATH": str(code)},
        python=DEBIAN_PYTHON,
    )
    pid = ready(daemon, "rec")
    assert psutil.Process(pid).uids().real == test_user.uid
    assert records(out)[0]["uid"] == test_user.uid


@pytest.mark.root
@pytest.mark.parametrize(
    ("circus", "use", "problem"),
    [
        ("readonly_group = {group}", "statsd.StatsdEmitter", None),
        ("readonly_group = {group}", "watchdog.WatchDog", "its requests need root"),
        ("endpoint_owner = {user}", "watchdog.WatchDog", None),
        ("", "statsd.StatsdEmitter", "which may not use the control endpoint"),
    ],
)
def test_rights_a_plugin_running_as_another_user_needs(
    workdir, test_user: ServiceUser, circus: str, use: str, problem: str | None
):
    settings = circus.format(group=test_user.extra_group, user=test_user.name)
    path = workdir / "circus.ini"
    path.write_text(
        f"[circus]\n{settings}\n[plugin:p]\nuse = circus.plugins.{use}\n"
        f"uid = {test_user.name}\n"
    )
    config = load(str(path))

    async def found() -> str | None:
        with zmq.Context() as context:
            watcher = PluginWatcher(config.plugins[0], Arbiter(config, context))
            return watcher.access_problem()

    result = asyncio.run(found())
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


def test_plugin_reaches_tcp_endpoints_bound_on_any_port(start_daemon, workdir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    out = workdir / "rec.jsonl"
    circus = f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = tcp://0.0.0.0:*\n"
    circus += "insecure_tcp = true\n"
    daemon = start_daemon(circus + recorder(out), env=ENV, ready=False)
    wait_for(lambda: "plugin ready plugin=rec" in daemon.output(), 15)
    assert records(out)[0]["watchers"] == ["plugin:rec"]
    assert call(endpoint, "stop", name="plugin:rec", waiting=True)["status"] == "ok"
    wait_for(lambda: "stop" in records(out)[-1], what="the plugin's own stop")
