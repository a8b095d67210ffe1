"""Hostile input against the control endpoint, from raw ZeroMQ clients.

Every test drives the real daemon (two watchers: ``w`` running two sleeps,
``idle`` stopped) with malformed frames, wrong types, code-loading payloads,
oversized frames and bursts. Each bad request must get one error reply whose
reason is one line naming what was wrong, with ``tb`` null and never the
catch-all errno 6; oversized frames and casts get no reply. Afterwards the
daemon must be up, answering, with the same watchers, options and pids, no
new "spawned" line in its log, no traceback there, and no marker file made by
a payload.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circusd.control.commands import COMMANDS
from circusd.control.protocol import MAX_MESSAGE
from circusd.control.server import MAX_IN_FLIGHT
from tests.conftest import Daemon, wait_for

CONFIG = """
    [watcher:w]
    cmd = sleep 300
    numprocesses = 2

    [watcher:idle]
    cmd = sleep 300
    autostart = false
    """

# A module the daemon can import from its working directory (sys.path[0]
# under `python -m`). Importing it or calling anything in it leaves a marker.
PAYLOAD_MODULE = "hostile_payload"
PAYLOAD = """\
import pathlib

HERE = pathlib.Path(__file__).parent
(HERE / "IMPORTED").touch()


def hook(*args, **kwargs):
    (HERE / "CALLED").touch()
    return True


class Stream:
    def __init__(self, *args, **kwargs):
        (HERE / "CALLED").touch()
"""
MARKERS = ("IMPORTED", "CALLED", "SPAWNED")

REPLY_TIMEOUT = 5.0
SILENCE = 0.5  # how long "no reply" is waited for
# Never in a reply to bad input: 6 is the catch-all for unexpected exceptions.
CLEAN_ERRNOS = {1, 2, 3, 4, 5}
LOG_ALARMS = ("Traceback", "command failed", "never awaited", "Task exception")


# -- raw clients --------------------------------------------------------------


def exchange(
    endpoint: str,
    frames: list[bytes],
    *,
    kind: int = zmq.DEALER,
    timeout: float = REPLY_TIMEOUT,
) -> list[bytes] | None:
    """Send one multipart message on a fresh socket; the reply, or None."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(kind)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        return sock.recv_multipart()
    finally:
        sock.close()


def encode(message: Any) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message).encode()


def clean_error(frames: list[bytes] | None, what: object = "") -> dict[str, Any]:
    """The reply as a dict, checked to be a well-formed, one-line error."""
    assert frames is not None, f"no reply to {what!r}"
    assert len(frames) == 1, frames
    reply = json.loads(frames[0])
    assert reply["status"] == "error", (what, reply)
    assert reply["tb"] is None, reply
    reason = reply["reason"]
    assert isinstance(reason, str) and reason, reply
    # One line, and nothing a terminal would act on (escapes, bidi controls).
    assert reason.isprintable() and "Traceback" not in reason, reply
    assert reply["errno"] in CLEAN_ERRNOS, (what, reply)
    assert isinstance(reply["time"], float)
    return reply


# -- the daemon under attack ---------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    statuses: dict[str, str]
    pids: dict[str, list[int]]
    options: dict[str, Any]
    children: frozenset[int]
    spawned: int


@dataclass
class Target:
    daemon: Daemon
    workdir: Path
    before: Snapshot

    @property
    def endpoint(self) -> str:
        return self.daemon.endpoint

    def send(self, message: Any, **kwargs: Any) -> list[bytes] | None:
        return exchange(self.endpoint, [encode(message)], **kwargs)

    def refused(
        self, message: Any, errno: int | set[int], mention: str = ""
    ) -> dict[str, Any]:
        reply = clean_error(self.send(message), message)
        wanted = errno if isinstance(errno, set) else {errno}
        assert reply["errno"] in wanted, (message, reply)
        assert mention in reply["reason"], (message, mention, reply)
        if isinstance(message, dict):
            assert reply["id"] == message.get("id"), reply
        return reply

    def snapshot(self) -> Snapshot:
        names = self.daemon.ok("list")["watchers"]
        statuses = self.daemon.ok("status")["statuses"]
        children = psutil.Process(self.daemon.process.pid).children(recursive=True)
        return Snapshot(
            statuses=statuses,
            pids={name: sorted(self.daemon.pids(name)) for name in names},
            options={
                name: self.daemon.ok("options", name=name)["options"] for name in names
            },
            children=frozenset(child.pid for child in children),
            spawned=self.daemon.output().count("spawned watcher="),
        )

    def assert_unchanged(self) -> None:
        assert self.daemon.process.poll() is None, self.daemon.output()[-3000:]
        assert self.snapshot() == self.before
        log = self.daemon.output()
        for alarm in LOG_ALARMS:
            assert alarm not in log, log[log.index(alarm) - 2000 :][:4000]
        made = [name for name in MARKERS if (self.workdir / name).exists()]
        assert not made, f"a payload ran: {made}"


@pytest.fixture
def target(start_daemon: Callable[..., Daemon], workdir: Path) -> Target:
    (workdir / f"{PAYLOAD_MODULE}.py").write_text(PAYLOAD)
    daemon = start_daemon(CONFIG)
    wait_for(lambda: len(daemon.pids("w")) == 2, timeout=5, what="two processes")
    wait_for(
        lambda: daemon.ok("status", name="w")["status"] == "active",
        timeout=5,
        what="w active",
    )
    result = Target(daemon, workdir, Snapshot({}, {}, {}, frozenset(), 0))
    result.before = result.snapshot()
    assert result.before.spawned == 2 and len(result.before.children) == 2
    return result


def request(command: Any, props: Any = None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"command": command, "id": f"h-{time.monotonic_ns()}"}
    if props is not None:
        message["properties"] = props
    message.update(fields)
    return message


# -- malformed messages ----------------------------------------------------------

NOT_A_JSON_OBJECT = [
    b"",
    b" ",
    b"\n\t \r\n",
    b"not json",
    b"{",
    b"{'command': 'list'}",
    b'{"command": "list"} trailing',
    b'{"command": "list",}',
    b"\x00",
    b"\xff\xfe\xfd",
    b'{"command": "li\xffst"}',
    b'\xef\xbb\xbf{"command": "list"}',
    b"[]",
    b'[{"command": "list"}]',
    b'"list"',
    b"5",
    b"-0.5e3",
    b"1e999",
    b"NaN",
    b"null",
    b"true",
    b"9" * 5000,  # past Python's int digit limit
    b"[" * 100_000 + b"]" * 100_000,  # past Python's recursion limit
    b'{"command": "list", "id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


def test_frames_that_are_not_a_json_object_get_errno_1(target: Target) -> None:
    for frame in NOT_A_JSON_OBJECT:
        reply = target.refused(frame, 1, "json invalid")
        assert reply["id"] is None
    target.assert_unchanged()


def test_objects_without_a_usable_command_get_errno_3(target: Target) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "a"}, "'command' is missing"),
        ({"properties": {"name": "w"}, "id": 7}, "'command' is missing"),
        ({"command": None, "id": None}, "'command' is missing"),
        ({"command": 5, "id": "b"}, "'command' must be a string"),
        ({"command": 1.5, "id": "c"}, "'command' must be a string"),
        ({"command": True, "id": "d"}, "'command' must be a string"),
        ({"command": ["list"], "id": ["e"]}, "'command' must be a string"),
        ({"command": {"list": 1}, "id": {"f": 1}}, "'command' must be a string"),
        ({"command": "list", "properties": "x", "id": 1}, "'properties'"),
        ({"command": "list", "properties": 5, "id": 2}, "'properties'"),
        ({"command": "list", "properties": [1], "id": 3}, "'properties'"),
        ({"command": "incr", "properties": ["w"], "id": 4}, "'properties'"),
        ({"command": "list", "properties": True, "id": 5}, "'properties'"),
    ]
    for message, mention in cases:
        target.refused(message, 3, mention)
    target.assert_unchanged()


def test_unknown_and_dunder_command_names_get_errno_2(target: Target) -> None:
    names = [
        "__class__",
        "__init__",
        "__dict__",
        "__getattribute__",
        "__import__",
        "_dispatch",
        "_handle",
        "COMMANDS",
        "commands",
        "Work",
        "keys",
        "pop",
        "get_",
        "os.system",
        "subprocess.Popen",
        "eval",
        "exec",
        "listen",
        "list ",
        " list",
        "li st",
        "list\x00",
        "",
        "\ud800",
        "x" * 100_000,
    ]
    for name in names:
        reply = target.refused(request(name), 2, "unknown command")
        assert repr(name.lower())[:50] in reply["reason"]
    # ipython exists in Circus, is refused here, and names itself.
    target.refused(request("ipython"), 2, "ipython")
    target.assert_unchanged()


# -- wrong properties, command by command -------------------------------------

NAME_TYPES = [5, -1, 1.5, True, [], ["w"], {}, {"name": "w"}]
BAD_NB = [
    -1,
    -(10**12),
    10**12,
    10**400,
    1.5,
    True,
    False,
    [],
    {},
    "x",
    "²",
    "--5",
    "9" * 5000,
    float("nan"),
    float("inf"),
]
BAD_SIGNUM = [
    "BOGUS",
    "SIGBOGUS",
    "",
    " ",
    0,
    -1,
    -15,
    65,
    10**12,
    1.5,
    True,
    [],
    {},
    "²",
    "9" * 5000,
    "RTMIN+100",
    "SIGRTMIN+²",
    "15.0",
]
BAD_PID = [0, -1, -(10**12), 1.5, True, "x", "²", [], {}, "9" * 5000]
BAD_TIMEOUT = [
    float("nan"),
    float("inf"),
    float("-inf"),
    -1,
    -0.5,
    10**12,
    True,
    "x",
    [],
    {},
]
BAD_FLAG = ["maybe", 2, -1, 1.5, [], {}, "yes please"]
RUN_MARKER = "touch SPAWNED"


def bad_options(workdir: Path) -> list[tuple[Any, str]]:
    """Option objects that `add` and `set` must refuse, and a word the reason has."""
    dotted = f"{PAYLOAD_MODULE}.hook"
    cases: list[tuple[Any, str]] = [
        ([], "'options'"),
        ("numprocesses=3", "'options'"),
        (5, "'options'"),
        ({"bogus": 1}, "bogus"),
        ({"__class__": 1}, "__class__"),
        ({"numprocesses": 10**12}, "numprocesses"),
        ({"numprocesses": -1}, "numprocesses"),
        ({"numprocesses": 1.5}, "numprocesses"),
        ({"numprocesses": True}, "numprocesses"),
        ({"numprocesses": "many"}, "numprocesses"),
        ({"numprocesses": "²"}, "numprocesses"),
        ({"singleton": True, "numprocesses": 2}, "singleton"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout"),
        ({"graceful_timeout": float("inf")}, "graceful_timeout"),
        ({"graceful_timeout": -1}, "graceful_timeout"),
        ({"warmup_delay": float("nan")}, "warmup_delay"),
        ({"stop_signal": "BOGUS"}, "stop_signal"),
        ({"stop_signal": 0}, "stop_signal"),
        ({"umask": "999"}, "umask"),
        ({"env": 5}, "env"),
        ({"env": {"A": 1}}, "env"),
        ({"env": {"A": "b\x00c"}}, "env"),
        ({"cmd": 5}, "cmd"),
        ({"cmd": "sleep\x00 1"}, "cmd"),
        ({"args": {"a": 1}}, "args"),
        ({"args": ["a", "\x00"]}, "args"),
        ({"uid": []}, "uid"),
        ({"uid": "no-such-user-here"}, "no-such-user-here"),
        ({"uid": "ro\x00ot"}, "uid"),
        ({"gid": "no-such-group-here"}, "no-such-group-here"),
        ({"working_dir": "/\x00"}, "working_dir"),
        ({"executable": "/bin/sle\x00ep"}, "executable"),
        ({"rlimit_bogus": 5}, "bogus"),
        # Code that circusd itself would import and call.
        ({"hooks.before_start": dotted}, "config file"),
        ({"hooks.after_spawn": "os.system"}, "config file"),
        ({"hooks.before_signal": "subprocess.Popen,true"}, "config file"),
        ({"HOOKS.before_start": dotted}, "config file"),
        ({"hooks": {"before_start": dotted}}, "config file"),
        ({"hooks.": dotted}, "config file"),
        ({"stdout_stream.class": f"{PAYLOAD_MODULE}.Stream"}, "stream class"),
        ({"stdout_stream.class": "subprocess.Popen"}, "stream class"),
        ({"stderr_stream.class": "os.system"}, "stream class"),
        ({"stderr_stream.class": "circus.stream.Popen"}, "stream class"),
        ({"stdout_stream": {"class": "subprocess.Popen"}}, "stream class"),
        ({"stdout_stream": "subprocess.Popen"}, "stdout_stream"),
        (
            {"stdout_stream": {"class": "FileStream", "filename": "/tmp/\x00"}},
            "stdout_stream",
        ),
        (
            {"stdout_stream": {"class": "FileStream", "filename": str(workdir)}},
            "directory",
        ),
        (
            {
                "stdout_stream": {
                    "class": "TimedRotatingFileStream",
                    "filename": str(workdir / "o.log"),
                    "rotate_interval": "9" * 400,
                }
            },
            "stdout_stream",
        ),
        ({"stdout_stream.bogus": "x"}, "bogus"),
    ]
    return cases


def property_cases(workdir: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(command, properties, a word the reason must have) for every command."""
    cases: list[tuple[str, dict[str, Any], str]] = []
    # Properties that would make a command act, were its name accepted.
    filler = {"signum": 15, "keys": ["cmd"], "options": {"numprocesses": 3}}
    named = (
        "rm start stop restart reload incr decr set signal kill status list "
        "numprocesses options get stats reopen"
    )
    for command in named.split():
        for value in [*NAME_TYPES, "nosuch", "w" * 200_000]:
            mention = "not found" if isinstance(value, str) else "'name'"
            cases.append((command, {**filler, "name": value}, mention))
    for command in "rm incr decr set signal kill options get".split():
        cases.append((command, filler, "'name' is missing"))
        cases.append((command, {**filler, "name": ""}, "'name'"))
    for command in ["start", "stop", "restart"]:
        for match in ["bogus", 5, [], "REGEX "]:
            cases.append((command, {"name": "idle", "match": match}, "match"))
        cases.append((command, {"name": "(", "match": "regex"}, "regex"))
        cases.append((command, {"name": "idle", "waiting": "maybe"}, "'waiting'"))
    for match in ["bogus", 5, []]:
        cases.append(("reopen", {"name": "idle", "match": match}, "match"))
    for flag in ["graceful", "sequential", "waiting"]:
        for value in BAD_FLAG:
            cases.append(("reload", {"name": "w", flag: value}, f"'{flag}'"))
    for command in ["reloadconfig", "quit"]:
        for value in BAD_FLAG:
            cases.append((command, {"waiting": value}, "'waiting'"))
    for command in ["incr", "decr"]:
        for value in BAD_NB:
            cases.append((command, {"name": "w", "nb": value}, "'nb'"))
        cases.append((command, {"name": "w", "waiting": "maybe"}, "'waiting'"))
    cases.append(("rm", {"name": "w", "nostop": "maybe"}, "'nostop'"))
    cases.append(("rm", {"name": "w", "waiting": []}, "'waiting'"))
    for command in ["signal", "kill"]:
        for value in BAD_SIGNUM:
            cases.append((command, {"name": "w", "signum": value}, "signal"))
        for value in BAD_PID:
            cases.append((command, {"name": "w", "signum": 15, "pid": value}, "'pid'"))
    cases.append(("signal", {"name": "w"}, "'signum' is missing"))
    cases.append(
        ("signal", {"name": "w", "signum": 15, "childpid": 1}, "'childpid' needs 'pid'")
    )
    for value in BAD_PID:
        cases.append(
            ("signal", {"name": "w", "signum": 15, "childpid": value}, "'childpid'")
        )
    for flag in ["children", "recursive"]:
        for value in BAD_FLAG:
            cases.append(
                ("signal", {"name": "w", "signum": 15, flag: value}, f"'{flag}'")
            )
    for value in BAD_TIMEOUT:
        cases.append(
            ("kill", {"name": "w", "graceful_timeout": value}, "'graceful_timeout'")
        )
    for options, mention in bad_options(workdir):
        cases.append(("set", {"name": "w", "options": options}, mention))
        if isinstance(options, dict) and "cmd" in options:
            continue  # add's own `cmd` property wins over options.cmd
        cases.append(
            (
                "add",
                {"name": "evil", "cmd": RUN_MARKER, "start": True, "options": options},
                mention,
            )
        )
    cases.append(("set", {"name": "w"}, "'options' is missing"))
    add = {"name": "evil", "cmd": RUN_MARKER, "start": True}
    for value in [*NAME_TYPES, ""]:
        cases.append(("add", {**add, "name": value}, "'name'"))
    for value in ["a b", "a.b", "evil\n", "evil\x00", "evil\u202e", "\ud800", " "]:
        cases.append(("add", {**add, "name": value}, "invalid watcher name"))
    for value in [5, [], {}, True, ["touch", "SPAWNED"], ""]:
        cases.append(("add", {**add, "cmd": value}, "'cmd'"))
    cases.append(("add", {"name": "evil", "start": True}, "'cmd' is missing"))
    for value in [5, {"a": 1}, [1], ["a", None]]:
        cases.append(("add", {**add, "args": value}, "'args'"))
    cases.append(("add", {**add, "name": "W"}, "already exists"))
    cases.append(("add", {**add, "name": "IDLE"}, "already exists"))
    cases.append(("add", {**add, "start": "maybe"}, "'start'"))
    cases.append(("add", {**add, "waiting": "maybe"}, "'waiting'"))
    for value in [{}, 5, True, 1.5]:
        cases.append(("get", {"name": "w", "keys": value}, "'keys'"))
    for value in [[1], [None], [[]], [{"a": 1}]]:
        cases.append(("get", {"name": "w", "keys": value}, "'keys'"))
    for key in ["__class__", "__dict__", "hooks.__init__", "config", "_apply"]:
        cases.append(("get", {"name": "w", "keys": ["cmd", key]}, repr(key)))
    cases.append(("get", {"name": "w"}, "'keys' is missing"))
    for value in BAD_PID:
        cases.append(("stats", {"name": "w", "process": value}, "'process'"))
    cases.append(("stats", {"name": "w", "process": os.getpid()}, "not found"))
    cases.append(("stats", {"name": "w", "process": 1}, "not found"))
    for value in [5, [], {}, True]:
        cases.append(("globaloptions", {"option": value}, "'option'"))
    for value in ["__class__", "endpoint_owner", "x" * 10_000]:
        cases.append(("globaloptions", {"option": value}, "option"))
    cases.append(("ipython", {"name": "w"}, "ipython"))
    return cases


# Commands without properties ignore whatever they are sent, as in Circus.
IGNORES_PROPERTIES = ("listsockets", "numwatchers", "dstats")
JUNK = {
    "name": ["w"],
    "nb": 10**12,
    "signum": "BOGUS",
    "waiting": "maybe",
    "options": {"hooks.before_start": "os.system"},
    "__class__": None,
}


def test_wrong_properties_for_every_command_are_refused(target: Target) -> None:
    cases = property_cases(target.workdir)
    assert {command for command, _, _ in cases} | set(IGNORES_PROPERTIES) == set(
        COMMANDS
    ), "every command needs hostile cases here"
    for command, props, mention in cases:
        target.refused(request(command, props), {2, 3, 4, 5}, mention)
    for command in IGNORES_PROPERTIES:
        frames = target.send(request(command, JUNK))
        assert frames is not None and json.loads(frames[0])["status"] == "ok"
    target.assert_unchanged()


def test_signal_and_kill_refuse_processes_outside_the_watcher(
    target: Target,
) -> None:
    sentinel = subprocess.Popen(["sleep", "60"])
    try:
        own = target.before.pids["w"]
        strangers = [sentinel.pid, os.getpid(), 1, target.daemon.process.pid]
        for pid in strangers:
            for signum in (signal.SIGTERM, "KILL", "SIGSTOP"):
                target.refused(
                    request("signal", {"name": "w", "signum": signum, "pid": pid}),
                    3,
                    f"process {pid} does not belong to watcher w",
                )
            for props in ({"children": True}, {"recursive": True, "children": True}):
                target.refused(
                    request("signal", {"name": "w", "signum": 15, "pid": pid, **props}),
                    3,
                    f"process {pid} does not belong",
                )
            target.refused(
                request(
                    "signal", {"name": "w", "signum": 9, "pid": own[0], "childpid": pid}
                ),
                3,
                f"process {pid} is not a child of {own[0]}",
            )
            target.refused(
                request(
                    "kill", {"name": "w", "pid": pid, "signum": 9, "waiting": True}
                ),
                3,
                f"process {pid} does not belong",
            )
            target.refused(
                request("stats", {"name": "w", "process": pid}), 3, "not found"
            )
        # One watcher's process is not another's either.
        target.refused(
            request("signal", {"name": "idle", "signum": 9, "pid": own[0]}),
            3,
            "does not belong to watcher idle",
        )
        assert sentinel.poll() is None
        assert psutil.Process(sentinel.pid).status() != psutil.STATUS_STOPPED
    finally:
        sentinel.kill()
        sentinel.wait()
    target.assert_unchanged()


def test_add_and_set_with_code_payloads_run_nothing(target: Target) -> None:
    dotted = f"{PAYLOAD_MODULE}.hook"
    hook, stream = "can only be set in the config file", "stream class"
    payloads: list[tuple[dict[str, Any], str]] = [
        ({"hooks.before_start": dotted}, hook),
        ({"hooks.after_spawn": dotted + ",true"}, hook),
        ({"hooks.extended_stats": dotted}, hook),
        ({"Hooks.Before_Start": dotted}, hook),
        ({"hooks": {"before_start": dotted}}, hook),
        ({"stdout_stream.class": f"{PAYLOAD_MODULE}.Stream"}, stream),
        ({"stderr_stream": {"class": f"{PAYLOAD_MODULE}.Stream"}}, stream),
        (
            {"stdout_stream.class": "subprocess.Popen", "stdout_stream.filename": "x"},
            stream,
        ),
        ({"stdout_stream.class": "os.system"}, stream),
        # A valid first option must not be applied before a refused one.
        ({"cmd": RUN_MARKER, "hooks.before_start": dotted}, hook),
        (
            {"numprocesses": 3, "stdout_stream.class": f"{PAYLOAD_MODULE}.Stream"},
            stream,
        ),
    ]
    for options, mention in payloads:
        for command, props in (
            (
                "add",
                {"name": "evil", "cmd": RUN_MARKER, "start": True, "waiting": True},
            ),
            ("add", {"name": "evil2", "cmd": RUN_MARKER, "start": True}),
            ("set", {"name": "w", "waiting": True}),
            ("set", {"name": "idle"}),
        ):
            target.refused(request(command, {**props, "options": options}), 3, mention)
    # Nothing that a payload could have run later either.
    time.sleep(0.3)
    target.assert_unchanged()


def test_payload_module_is_live_when_the_config_file_names_it(
    start_daemon: Callable[..., Daemon], workdir: Path
) -> None:
    """The control for the test above: the same hook runs from the config."""
    (workdir / f"{PAYLOAD_MODULE}.py").write_text(PAYLOAD)
    start_daemon(f"""
        [watcher:hooked]
        cmd = sleep 300
        hooks.before_start = {PAYLOAD_MODULE}.hook
        """)
    wait_for(lambda: (workdir / "CALLED").exists(), timeout=5, what="hook call")
    assert (workdir / "IMPORTED").exists()


# -- sizes, depths and framing ------------------------------------------------


def test_long_strings_and_deep_nesting_get_one_line_errors(target: Target) -> None:
    huge = "x" * 400_000
    target.refused(request(huge), 2, "unknown command")
    target.refused(request("status", {"name": huge}), 3, "not found")
    target.refused(request("get", {"name": "w", "keys": [huge]}), 3, "not found")
    target.refused(request("incr", {"name": "w", "nb": huge}), 3, "'nb'")
    target.refused(request("signal", {"name": "w", "signum": huge}), 3, "signal")
    target.refused(
        request("set", {"name": "w", "options": {huge: 1}}), 3, "unknown option"
    )
    target.refused(
        request(
            "add",
            {
                "name": huge,
                "cmd": RUN_MARKER,
                "start": True,
                "options": {"cmd": "x" * 200_000, "bogus": 1},
            },
        ),
        3,
        "bogus",
    )
    nested: Any = "w"
    for _ in range(500):
        nested = [nested]
    for props in (
        {"name": nested},
        {"name": "w", "options": {"env": {"A": nested}}},
        {"name": "w", "options": {"plugin.setting": nested}},
    ):
        target.refused(request("set", props), 3, "nested deeper than 32")
    # Whatever a name holds, the reason is one printable line naming it.
    for name in ("a\nb", "a\r\nb", "\x1b[2J", "x\u202ey", "\x00", "\ud800"):
        reply = target.refused(request("status", {"name": name}), 3, "not found")
        assert repr(name)[1:-1] in reply["reason"]
    # Unicode that Python reads as digits but int() refuses, in every integer.
    for props in ({"name": "w", "nb": "²"}, {"name": "w", "nb": "٣x"}):
        target.refused(request("incr", props), 3, "'nb' must be an integer")
    # Ids too deep to echo (979 levels once made the reply itself fail to
    # encode, so no reply came at all): the reply still comes, with id null.
    for depth in (32, 33, 500, 979):
        nest = b"[" * depth + b"1" + b"]" * depth
        reply = clean_error(target.send(b'{"command": "status", "id": %s}' % nest))
        assert reply["id"] is None and "nested deeper than" in reply["reason"]
    # Ids inside the limit come back verbatim.
    for ident in ([[[["a"]]]], {"k": [1, 2.5, None, True]}, "é\u2028", 10**30, -0.0):
        reply = target.refused({"command": "nosuch", "id": ident}, 2, "nosuch")
        assert reply["id"] == ident
    target.assert_unchanged()


def test_multi_frame_messages_get_an_error_reply(target: Target) -> None:
    status = encode({"command": "status", "id": "s"})
    incr = encode({"command": "incr", "properties": {"name": "w"}, "id": "i"})
    for frames in (
        [status, status],
        [incr, incr],
        [incr, b""],
        [b"", incr, incr],
        [b"", b"", incr],
        [incr] * 5,
        [b"x"] * 50,
    ):
        answer = exchange(target.endpoint, frames)
        if frames[0] == b"":  # a REQ-style envelope is kept in the reply
            assert answer is not None and answer[0] == b""
            answer = answer[1:]
        reply = clean_error(answer, frames[:2])
        assert reply["errno"] == 3 and "expected 1 JSON frame" in reply["reason"]
        assert reply["id"] is None
    # A DEALER frame that looks like a REQ delimiter is answered in kind.
    answer = exchange(target.endpoint, [b"", status])
    assert answer is not None and answer[0] == b""
    assert json.loads(answer[1])["id"] == "s"
    # REQ clients: one body frame is served, more is an error.
    answer = exchange(target.endpoint, [status], kind=zmq.REQ)
    assert answer is not None and json.loads(answer[0])["status"] == "ok"
    clean_error(exchange(target.endpoint, [b"junk"], kind=zmq.REQ))
    clean_error(exchange(target.endpoint, [b""], kind=zmq.REQ))
    reply = clean_error(exchange(target.endpoint, [incr, incr], kind=zmq.REQ))
    assert "got 2" in reply["reason"]
    target.assert_unchanged()


def test_oversized_frames_are_dropped_and_others_still_answered(
    target: Target,
) -> None:
    assert MAX_MESSAGE == 1 << 20
    bystander: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    bystander.linger = 0
    bystander.connect(target.endpoint)
    try:
        incr = {"command": "incr", "properties": {"name": "w", "nb": 3}, "id": "big"}
        padded = json.dumps(incr).encode()
        padded += b" " * (MAX_MESSAGE + 1 - len(padded))
        for frames in (
            [b"x" * (MAX_MESSAGE + 1)],
            [padded],
            [b"{" * (4 * MAX_MESSAGE)],
            [b"", padded],
            [b"", b"ok", padded],
        ):
            assert exchange(target.endpoint, frames, timeout=SILENCE) is None
            # Another client is served all along.
            bystander.send(encode({"command": "numwatchers", "id": len(frames)}))
            assert bystander.poll(int(REPLY_TIMEOUT * 1000))
            reply = json.loads(bystander.recv())
            assert reply == {**reply, "status": "ok", "numwatchers": 2}
        # A frame of exactly the limit is still a request, and answered.
        status = json.dumps({"command": "status", "id": "edge"}).encode()
        edge = status + b" " * (MAX_MESSAGE - len(status))
        reply = exchange(target.endpoint, [edge])
        assert reply is not None and json.loads(reply[0])["id"] == "edge"
        # The limit is libzmq's, per frame: frames under it that add up to
        # more are received whole (and buffered whole), then refused.
        reply = clean_error(
            exchange(target.endpoint, [b"y" * (MAX_MESSAGE // 2 + 1)] * 3)
        )
        assert "got 3" in reply["reason"]
    finally:
        bystander.close()
    target.assert_unchanged()


def test_casts_with_bad_content_get_no_reply_and_change_nothing(
    target: Target,
) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(target.endpoint)
    casts: list[dict[str, Any]] = [
        {"msg_type": "cast"},
        {"msg_type": "cast", "command": 5},
        {"msg_type": "cast", "command": "list", "properties": "x"},
        {"msg_type": "cast", "command": "__class__"},
        {"msg_type": "cast", "command": "incr", "properties": {"name": "w", "nb": -1}},
        {"msg_type": "cast", "command": "incr", "properties": {"name": "w", "nb": "²"}},
        {
            "msg_type": "cast",
            "command": "signal",
            "properties": {"name": "w", "signum": 9, "pid": os.getpid()},
        },
        {
            "msg_type": "cast",
            "command": "add",
            "properties": {
                "name": "evil",
                "cmd": RUN_MARKER,
                "start": True,
                "options": {"hooks.before_start": f"{PAYLOAD_MODULE}.hook"},
            },
        },
        {
            "msg_type": "cast",
            "command": "set",
            "properties": {"name": "w", "options": {"numprocesses": 10**12}},
        },
        {"msg_type": "cast", "command": "quit", "properties": {"waiting": "maybe"}},
    ]
    try:
        for message in casts:
            sock.send(encode({**message, "id": "cast"}))
        # The first reply on this socket is the one to the status that follows:
        # no error reply to a cast is left queued for a plugin to misread.
        sock.send(encode({"command": "status", "id": "after"}))
        assert sock.poll(int(REPLY_TIMEOUT * 1000))
        reply = json.loads(sock.recv())
        assert reply["id"] == "after" and reply["status"] == "ok", reply
        assert not sock.poll(int(SILENCE * 1000))
    finally:
        sock.close()
    # Frames that are not a JSON object cannot be known to be casts: answered.
    target.refused(b'{"msg_type": "cast", ', 1, "json invalid")
    target.assert_unchanged()


def test_a_burst_of_thousands_of_requests_is_answered_in_full(
    target: Target,
) -> None:
    count = 4000
    kinds: list[tuple[dict[str, Any], str]] = [
        ({"command": "status"}, "ok"),
        ({"command": "list", "properties": {"name": "w"}}, "ok"),
        ({"command": "incr", "properties": {"name": "w", "nb": -1}}, "error"),
        ({"command": "__class__"}, "error"),
        ({"command": "kill", "properties": {"name": "w", "pid": 1}}, "error"),
    ]
    sockets: list[zmq.Socket[bytes]] = [
        zmq.Context.instance().socket(zmq.DEALER) for _ in range(4)
    ]
    poller = zmq.Poller()
    for sock in sockets:
        sock.linger = 0
        sock.connect(target.endpoint)
        poller.register(sock, zmq.POLLIN)
    expected: dict[int, str] = {}
    got: dict[int, dict[str, Any]] = {}
    junk_replies = 0
    started = time.monotonic()
    try:
        sent = 0
        while len(got) + junk_replies < count + count // 10:
            # Keep a window in flight on every socket, as a pipelining client.
            while sent < count and sent - len(got) < 800:
                message, outcome = kinds[sent % len(kinds)]
                sockets[sent % 4].send(encode({**message, "id": sent}))
                expected[sent] = outcome
                if sent % 10 == 0:
                    sockets[sent % 4].send(b"\xffnot json")
                sent += 1
            events = dict(poller.poll(int(REPLY_TIMEOUT * 1000)))
            assert events, f"stalled after {len(got)} replies"
            for sock in events:
                while sock.poll(0):
                    reply = json.loads(sock.recv())
                    if reply["id"] is None:
                        assert reply["errno"] == 1, reply
                        junk_replies += 1
                    else:
                        got[reply["id"]] = reply
    finally:
        for sock in sockets:
            sock.close()
    elapsed = time.monotonic() - started
    assert sorted(got) == list(range(count))
    assert junk_replies == count // 10
    for ident, reply in got.items():
        assert reply["status"] == expected[ident], reply
        if reply["status"] == "error":
            assert reply["tb"] is None and reply["errno"] in CLEAN_ERRNOS, reply
    assert elapsed < 20, f"{count} requests took {elapsed:.1f}s"
    target.assert_unchanged()


def unbounded_dealer(endpoint: str) -> zmq.Socket[bytes]:
    """A DEALER that queues without limit on its side (no high-water marks)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = sock.rcvhwm = 0
    sock.connect(endpoint)
    return sock


def collect(sock: zmq.Socket[bytes], count: int) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    while len(replies) < count:
        assert sock.poll(int(REPLY_TIMEOUT * 1000)), f"{len(replies)} replies"
        replies.append(json.loads(sock.recv()))
    assert not sock.poll(int(SILENCE * 1000)), "more replies than requests"
    return replies


def test_a_burst_sent_without_reading_is_not_refused(target: Target) -> None:
    """Quick requests finish as they arrive; they never fill the in-flight slots."""
    count = 3000
    sock = unbounded_dealer(target.endpoint)
    try:
        for ident in range(count):
            sock.send(encode({"command": "status", "id": ident}))
        replies = collect(sock, count)
    finally:
        sock.close()
    assert sorted(reply["id"] for reply in replies) == list(range(count))
    assert {reply["status"] for reply in replies} == {"ok"}, replies[-1]
    target.assert_unchanged()


def test_requests_past_the_in_flight_limit_are_refused_with_their_id(
    start_daemon: Callable[..., Daemon],
) -> None:
    limit = MAX_IN_FLIGHT
    daemon = start_daemon("""
        [watcher:slow]
        cmd = sleep 300
        numprocesses = 2
        warmup_delay = 2
        autostart = false
        """)
    sock = unbounded_dealer(daemon.endpoint)
    count = limit + 200
    try:
        # The first start holds the watcher's lock through its warmup delay;
        # every other one waits for the lock, holding an in-flight slot.
        for ident in range(count):
            props = {"name": "slow", "waiting": True}
            sock.send(encode({"command": "start", "properties": props, "id": ident}))
        sock.send(encode({"command": "status", "id": "late", "msg_type": "cast"}))
        replies = collect(sock, count)
    finally:
        sock.close()
    assert sorted(reply["id"] for reply in replies) == list(range(count))
    refused = [reply for reply in replies if reply["status"] == "error"]
    assert len(refused) == count - limit
    for reply in refused:
        assert reply["errno"] == 5 and reply["tb"] is None, reply
        assert reply["reason"] == f"too many requests in progress (limit {limit})"
    started = [reply for reply in replies if reply["status"] == "ok"]
    assert sum(len(reply["info"]["started"]) for reply in started) == 2
    assert len(daemon.pids("slow")) == 2
    assert daemon.output().count("spawned watcher=slow") == 2


# -- generated input ----------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
GENERATED = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
READ_ONLY = (
    "status",
    "list",
    "numprocesses",
    "options",
    "get",
    "stats",
    "globaloptions",
    "listsockets",
    "numwatchers",
    "dstats",
    "ipython",
)


def test_generated_garbage_always_gets_a_clean_reply(target: Target) -> None:
    @GENERATED
    @given(
        message=JSON_VALUES.filter(
            lambda m: (
                not (
                    isinstance(m, dict)
                    and (
                        isinstance(m.get("command"), str) or m.get("msg_type") == "cast"
                    )
                )
            )
        )
    )
    def any_json_that_names_no_command(message: Any) -> None:
        reply = clean_error(target.send(message), message)
        assert reply["errno"] in (1, 3), reply

    @GENERATED
    @given(data=st.binary(max_size=200))
    def any_bytes(data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if isinstance(message, dict) and (
            isinstance(message.get("command"), str) or message.get("msg_type") == "cast"
        ):
            return  # a real request or a cast, however unlikely
        clean_error(target.send(data), data)

    @GENERATED
    @given(
        command=st.text(max_size=30).filter(lambda c: c.lower() not in COMMANDS),
        ident=JSON_VALUES,
    )
    def unknown_commands_echo_the_id(command: str, ident: Any) -> None:
        reply = clean_error(target.send({"command": command, "id": ident}), command)
        assert reply["errno"] == 2 and reply["id"] == ident, reply

    @GENERATED
    @given(
        command=st.sampled_from(READ_ONLY),
        props=st.dictionaries(
            st.sampled_from(
                ["name", "keys", "process", "option", "match", "waiting", "extended"]
            )
            | st.text(max_size=8),
            JSON_VALUES,
            max_size=4,
        ),
    )
    def read_only_commands_with_any_properties(
        command: str, props: dict[str, Any]
    ) -> None:
        frames = target.send({"command": command, "properties": props, "id": 1})
        assert frames is not None
        reply = json.loads(frames[0])
        if reply["status"] == "error":
            clean_error(frames, (command, props))

    any_json_that_names_no_command()
    any_bytes()
    unknown_commands_echo_the_id()
    read_only_commands_with_any_properties()
    target.assert_unchanged()


# -- bounds checked before anything is spawned or opened ---------------------


def test_add_refuses_a_uid_no_system_can_have(target: Target) -> None:
    target.refused(
        request(
            "add",
            {"name": "bigid", "cmd": "sleep 1", "options": {"uid": 10**30, "gid": 0}},
        ),
        3,
        "uid",
    )


def test_add_refuses_a_gid_no_system_can_have(target: Target) -> None:
    target.refused(
        request("add", {"name": "bigid", "cmd": "sleep 1", "options": {"gid": 2**40}}),
        3,
        "gid",
    )


def test_add_refuses_a_max_age_too_large_to_schedule(target: Target) -> None:
    target.refused(
        request(
            "add", {"name": "old", "cmd": "sleep 1", "options": {"max_age": 10**400}}
        ),
        3,
        "max_age",
    )


def test_a_refused_stream_leaks_no_file_descriptor(target: Target) -> None:
    fds = Path(f"/proc/{target.daemon.process.pid}/fd")
    before = len(list(fds.iterdir()))
    stream = {
        "class": "TimedRotatingFileStream",
        "filename": str(target.workdir / "o.log"),
        "rotate_interval": "9" * 400,
    }
    for _ in range(20):
        message = request("set", {"name": "w", "options": {"stdout_stream": stream}})
        target.refused(message, 3, "stdout_stream")
    assert len(list(fds.iterdir())) < before + 5
