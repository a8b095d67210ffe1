"""Circus 0.19's own circusctl sees the same from circusd as from Circus.

Both daemons run the same INI, each on ipc endpoints in its own directory;
every command runs once per daemon, in console mode and with ``--json``,
and the two results must match (exit code, stdout, stderr) once the
following, and only the following, has been normalised:

Things that differ between any two runs, whoever the daemon:
  * ``time`` and ``id`` in JSON replies (``id`` is circusctl's own uuid; the
    echo of a chosen id is checked in `test_raw_messages_*`);
  * pids (``list NAME``, ``info.started/stopped/kept``, ``stats``);
  * socket fds and the port picked for ``port = 0`` (``listsockets``);
  * each daemon's private directory in endpoints and paths, as ``{dir}``;
  * measured ``stats`` values (cpu, mem, mem_info1/2, ctime, age,
    create_time, started): only their JSON types are compared. circusd
    rounds differently (mem to 0.1 %, sizes to 0.1 unit, ctime as m:ss.cc),
    so the console line is compared up to the nice column.

Things circusd adds or represents differently, on purpose:
  * ``options``: Circus sends ``__name__`` (its INI section name, an
    internal leak); circusd sends ``name`` and the options Circus accepts
    but leaves out of ``options``, plus hooks and rlimits as objects
    (`CIRCUSD_ONLY_OPTIONS`). Both send ``stdout_stream_conf`` and
    ``stderr_stream_conf``, but Circus's have lost their ``class`` key (its
    stream factory pops it out of the watcher's own dict, a Circus bug), so
    ``class`` is left out of circusd's before comparing.
  * ``options``: ``warmup_delay`` is always a float in circusd (Circus keeps
    the INI's int: ``0`` against ``0.0``); an unset ``working_dir`` is null
    in circusd, where Circus fills in its own current directory. The child
    starts in circusd's directory all the same.
  * ``globaloptions``: ``stats_endpoint`` is null in circusd when no stats
    publisher runs; Circus shows its default ``tcp://127.0.0.1:5557`` even
    though nothing is bound there.

Circus refuses a mutating command while another holds its global lock
(errno 5, "arbiter is already running ... command"); `Peer.ctl` retries
those refusals, for Circus only. circusd has no such lock.

Where Circus is broken, circusd differs on purpose and the tests say what
circusd does instead: an invalid signal name (Circus: errno 5 and a
traceback quoting the whole request), ``ipython`` (Circus: a reply about a
missing module; circusd: errno 2, never supported) and ``listen`` sent to
the control socket (Circus: errno 3; circusd: errno 2, unknown command), and
malformed messages (an empty frame, a JSON array, no ``command``), which
Circus never answers and circusd answers with errno 1 or 3.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zmq

from tests.compat.conftest import Ctl, Pair, Peer
from tests.conftest import wait_for

pytestmark = [pytest.mark.compat, pytest.mark.timeout(120)]

INI = """\
[circus]
endpoint = ipc://{dir}/ctl.sock
pubsub_endpoint = ipc://{dir}/pub.sock
multicast_endpoint =

[watcher:sleeper]
cmd = /bin/sh -c 'trap "" HUP; exec sleep 600'
numprocesses = 2
graceful_timeout = 5

[watcher:Other]
cmd = sleep 600
stdout_stream.class = FileStream
stdout_stream.filename = {dir}/other.log

[socket:web]
host = 127.0.0.1
port = 0

[socket:local]
path = {dir}/local.sock
"""

# Reached through the options circusd accepts but Circus leaves out of
# `options`, and circusd's own: see the module docstring.
CIRCUS_ONLY_OPTIONS = frozenset({"__name__"})
CIRCUSD_ONLY_OPTIONS = frozenset(
    {
        "name",
        "autostart",
        "copy_path",
        "virtualenv",
        "virtualenv_py_ver",
        "umask",
        "stdin_socket",
        "check_delay",
        "check_flapping",
        "stdout_stream",
        "stderr_stream",
        "hooks",
        "rlimits",
        "no_new_privs",
        "pdeathsig",
        "capability_bounding_set",
    }
)
STREAM_CONFS = ("stdout_stream_conf", "stderr_stream_conf")
CIRCUS_STATS_DEFAULT = "tcp://127.0.0.1:5557"
MEASURED = ("cpu", "mem", "mem_info1", "mem_info2", "ctime", "age", "create_time")
PID_LISTS = ("started", "stopped", "kept")

READS = [
    ("list",),
    ("list", "sleeper"),
    ("list", "Other"),
    ("status",),
    ("status", "sleeper"),
    ("status", "other"),
    ("numprocesses",),
    ("numprocesses", "sleeper"),
    ("numwatchers",),
    ("options", "sleeper"),
    ("options", "Other"),
    ("get", "sleeper", "cmd", "graceful_timeout", "stop_signal"),
    ("get", "Other", "stdout_stream_conf"),
    ("listsockets",),
    ("globaloptions",),
    ("globaloptions", "endpoint"),
    ("stats", "sleeper"),
    ("stats",),
]


# -- normalisation ----------------------------------------------------------------


def _command(args: tuple[str, ...]) -> str:
    return next(arg for arg in args if not arg.startswith("--"))


def _options(
    peer: Peer, command: str, options: dict[str, Any], as_json: bool
) -> list[Any]:
    """The option pairs, in order, minus the differences listed above."""
    if command == "globaloptions":
        if options.get("stats_endpoint") in (None, "", CIRCUS_STATS_DEFAULT):
            options["stats_endpoint"] = "<no stats publisher>"
        return list(options.items())
    dropped = CIRCUS_ONLY_OPTIONS if peer.kind == "circus" else CIRCUSD_ONLY_OPTIONS
    result = {k: v for k, v in options.items() if k not in dropped}
    if "warmup_delay" in result:
        result["warmup_delay"] = float(result["warmup_delay"])
    if peer.kind == "circus" and result.get("working_dir") == "{dir}":
        result["working_dir"] = None if as_json else ""
    for key in STREAM_CONFS:
        if peer.kind == "circusd" and key in result:
            conf = result[key] if as_json else ast.literal_eval(result[key])
            conf = {k: v for k, v in conf.items() if k != "class"}
            result[key] = conf if as_json else repr(conf)
    return list(result.items())


def _stats_info(info: Any) -> Any:
    if not isinstance(info, dict):
        return info
    result = dict(info)
    for key in (*MEASURED, "started"):
        if key in result:
            result[key] = f"<{type(result[key]).__name__}>"
    result["pid"] = "<pid>"
    result["children"] = [_stats_info(child) for child in result["children"]]
    return result


def _stats_by_pid(infos: dict[str, Any]) -> list[Any]:
    return sorted(
        (json.dumps(_stats_info(info), sort_keys=True) for info in infos.values()),
    )


def _scrub(value: Any, peer: Peer) -> Any:
    """Every string with the daemon's directory written as {dir}."""
    if isinstance(value, str):
        return value.replace(str(peer.directory), "{dir}")
    if isinstance(value, list):
        return [_scrub(item, peer) for item in value]
    if isinstance(value, dict):
        return {_scrub(k, peer): _scrub(v, peer) for k, v in value.items()}
    return value


def _normal_json(peer: Peer, command: str, reply: dict[str, Any]) -> Any:
    reply = _scrub(reply, peer)
    reply.pop("time")
    reply.pop("id")
    if "pids" in reply:
        reply["pids"] = ["<pid>"] * len(reply["pids"])
    if isinstance(reply.get("info"), dict) and command in ("start", "restart"):
        for key in PID_LISTS:
            if key in reply["info"]:
                reply["info"][key] = ["<pid>"] * len(reply["info"][key])
    if command == "stats" and "infos" in reply:
        reply["infos"] = {w: _stats_by_pid(i) for w, i in reply["infos"].items()}
    elif command == "stats" and "info" in reply:
        reply["info"] = _stats_by_pid(reply["info"])
    for sock in reply.get("sockets", []):
        sock["fd"] = "<fd>"
        if "port" in sock:
            sock["port"] = "<port>"
    if command in ("options", "get", "globaloptions") and "options" in reply:
        reply["options"] = _options(peer, command, reply["options"], True)
    return reply


def _pairs(text: str) -> dict[str, str]:
    lines = text.splitlines()
    return dict(
        line.split(": ", 1) if ": " in line else (line[:-1], "") for line in lines
    )


def _normal_text(peer: Peer, command: str, text: str) -> Any:
    text = _scrub(text, peer)
    if command == "list":
        return re.sub(r"^\d+(,\d+)*$", lambda m: re.sub(r"\d+", "<pid>", m[0]), text)
    if command == "stats":
        # "<pid>: <pid>  cmdline username nice" then measured values.
        line = re.compile(r"^\d+: \d+  (\S+ \S+ \S+) .*$", re.MULTILINE)
        return sorted(line.sub(r"<pid>: <pid>  \1 <measured>", text).splitlines())
    if command == "listsockets":
        text = re.sub(r"^\d+:socket", "<fd>:socket", text, flags=re.MULTILINE)
        return re.sub(r":\d+$", ":<port>", text, flags=re.MULTILINE)
    if command in ("options", "get", "globaloptions") and text.strip():
        return _options(peer, command, _pairs(text.rstrip("\n")), False)
    return text


def normal(peer: Peer, args: tuple[str, ...], result: Ctl) -> tuple[int, Any, Any]:
    command = _command(args)
    if "--json" in args and result.out.strip():
        out = _normal_json(peer, command, json.loads(result.out))
    else:
        out = _normal_text(peer, command, result.out)
    return result.rc, out, _scrub(result.err, peer)


# -- running ------------------------------------------------------------------------


def same(pair: Pair, *args: str) -> tuple[Ctl, Ctl]:
    """Run circusctl ARGS against both; the normalised results must match."""
    circus, ours = pair.circus.ctl(*args), pair.ours.ctl(*args)
    assert normal(pair.circus, args, circus) == normal(pair.ours, args, ours), (
        f"circusctl {' '.join(args)}\n  Circus:  {circus}\n  circusd: {ours}"
    )
    return circus, ours


def same_in_parallel(pair: Pair, commands: list[tuple[str, ...]]) -> None:
    """`same` for commands that change nothing, run concurrently."""
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(same, pair, *args) for args in commands]:
            future.result()


def both_modes(commands: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [*commands, *(("--json", *args) for args in commands)]


@pytest.fixture
def pair(start_pair: Callable[[str], Pair]) -> Pair:
    return start_pair(INI)


# -- tests --------------------------------------------------------------------------


def test_reading_commands_print_what_circus_prints(pair):
    same_in_parallel(pair, both_modes(READS))


def test_reading_commands_really_ran_against_each_daemon(pair):
    # Guards the normalisation: it must not make different states look equal.
    circus, ours = same(pair, "list", "sleeper")
    assert circus.out != ours.out
    assert len(circus.out.strip().split(",")) == 2
    circus, ours = same(pair, "--json", "globaloptions", "endpoint")
    assert pair.ours.endpoint in ours.out and pair.circus.endpoint in circus.out


def test_incr_and_decr_scale_the_same(pair):
    assert same(pair, "incr", "sleeper")[1].out == "ok\n"
    pair.settle("sleeper", 3)
    same(pair, "numprocesses", "sleeper")
    assert same(pair, "decr", "sleeper")[1].out == "ok\n"
    pair.settle("sleeper", 2)
    assert same(pair, "incr", "sleeper", "2", "--waiting")[1].out == "4\n"
    assert same(pair, "--json", "decr", "sleeper", "3", "--waiting")[1].rc == 0
    pair.settle("sleeper", 1)
    same_in_parallel(pair, both_modes([("numprocesses",), ("list", "sleeper")]))


def test_set_numprocesses_changes_the_watcher_the_same(pair):
    assert same(pair, "set", "sleeper", "numprocesses", "3")[1].out == "ok\n"
    pair.settle("sleeper", 3)
    same_in_parallel(
        pair, both_modes([("get", "sleeper", "numprocesses"), ("options", "sleeper")])
    )
    same(pair, "--json", "set", "sleeper", "numprocesses", "1", "--waiting")
    pair.settle("sleeper", 1)


def test_stop_start_restart_one_watcher_the_same(pair):
    assert same(pair, "stop", "sleeper")[1].out == "ok\n"
    pair.settle("sleeper", 0, "stopped")
    same_in_parallel(
        pair,
        both_modes(
            [("status",), ("status", "sleeper"), ("list", "sleeper")]
            + [("numprocesses", "sleeper"), ("numprocesses",), ("stats", "sleeper")]
        ),
    )
    assert same(pair, "start", "sleeper")[1].out == "ok\n"
    pair.settle("sleeper", 2)
    before = {peer.kind: set(peer.pids("sleeper")) for peer in pair}
    assert same(pair, "restart", "sleeper")[1].out == "ok\n"
    for peer in pair:
        wait_for(
            lambda peer=peer: (
                not set(peer.pids("sleeper")) & before[peer.kind]
                and len(peer.pids("sleeper")) == 2
            ),
            timeout=20,
            what=f"{peer.kind} to replace both sleeper processes",
        )
    pair.settle("sleeper", 2)


def test_waiting_lifecycle_replies_carry_the_same_fields(pair):
    circus, ours = same(pair, "--json", "stop", "sleeper", "--waiting")
    assert json.loads(ours.out)["info"] is None
    circus, ours = same(pair, "--json", "start", "sleeper", "--waiting")
    assert len(json.loads(ours.out)["info"]["started"]) == 2
    circus, ours = same(pair, "--json", "restart", "sleeper", "--waiting")
    info = json.loads(ours.out)["info"]
    assert len(info["stopped"]) == 2 and len(info["started"]) == 2
    same(pair, "stop", "Other", "--waiting")
    same(pair, "start", "Other", "--waiting")


def test_signal_hup_reaches_the_processes_the_same(pair):
    before = {peer.kind: peer.pids("sleeper") for peer in pair}
    assert same(pair, "signal", "sleeper", "HUP")[1].out == "ok\n"
    same(pair, "--json", "signal", "sleeper", "SIGHUP")
    # The workers ignore SIGHUP: the same processes are still there.
    for peer in pair:
        assert peer.pids("sleeper") == before[peer.kind]
        assert peer.status("sleeper") == "active"


def test_unknown_watcher_is_the_same_error(pair):
    commands = [
        ("list", "nope"),
        ("status", "nope"),
        ("numprocesses", "nope"),
        ("options", "nope"),
        ("get", "nope", "numprocesses"),
        ("stats", "nope"),
        ("incr", "nope"),
        ("decr", "nope"),
        ("start", "nope"),
        ("stop", "nope"),
        ("restart", "nope"),
        ("set", "nope", "numprocesses", "3"),
        ("signal", "nope", "HUP"),
        ("get", "sleeper", "nope"),
        ("globaloptions", "nope"),
    ]
    # Every error reply has the same shape: --json for a few is enough.
    same_in_parallel(pair, [*commands, *both_modes(commands[:3])[3:]])
    result = pair.ours.ctl("list", "nope")
    assert (result.rc, result.out, result.err) == (
        3,
        "",
        "error: program nope not found\n",
    )
    reply = json.loads(pair.ours.ctl("--json", "stop", "nope").out)
    assert (reply["status"], reply["errno"]) == ("error", 3)


def test_invalid_signal_is_a_plain_message_error(pair):
    # Circus answers errno 5 with a traceback here (reference §11): circusd
    # says what was wrong, errno 3, and sends no traceback.
    result = pair.ours.ctl("signal", "sleeper", "BOGUS")
    assert (result.rc, result.out) == (3, "")
    assert result.err.startswith("error: signal invalid")
    assert "Traceback" not in result.err
    reply = json.loads(pair.ours.ctl("--json", "signal", "sleeper", "BOGUS").out)
    assert (reply["errno"], reply["tb"]) == (3, None)
    assert pair.circus.ctl("signal", "sleeper", "BOGUS").rc == 3


@pytest.mark.parametrize(
    "message",
    [
        {"command": "bogus", "properties": {}, "id": "raw-1"},
        {"command": "LIST", "id": 7},
        {"command": "status", "properties": {"name": "SLEEPER"}, "id": None},
        {"command": "list", "properties": [], "id": "raw-2"},
    ],
    ids=["unknown-command", "uppercase-command", "uppercase-name", "empty-list-props"],
)
def test_raw_messages_get_the_same_reply(pair, message):
    replies = []
    for peer in pair:
        reply = _raw(peer, message)
        assert isinstance(reply.pop("time"), float)
        replies.append(_scrub(reply, peer))
    assert replies[0] == replies[1]
    assert replies[1]["id"] == message["id"]


def test_raw_invalid_json_gets_the_same_reply(pair):
    replies = []
    for peer in pair:
        reply = _raw_bytes(peer, b"not json {")
        reply.pop("time")
        replies.append(reply)
    assert (
        replies[0]
        == replies[1]
        == {
            "status": "error",
            "reason": "json invalid",
            "tb": None,
            "errno": 1,
            "id": None,
        }
    )


def test_commands_circus_cannot_run_are_unknown_to_circusd(pair):
    # Circus replies to `ipython` with a missing-module message and to `listen`
    # with errno 3; circusd has neither command.
    for command in ("ipython", "listen"):
        reply = _raw(pair.ours, {"command": command, "id": command})
        assert (reply["status"], reply["errno"]) == ("error", 2)
        assert _raw(pair.circus, {"command": command, "id": command})["id"] == command


def test_malformed_messages_get_an_error_reply_where_circus_sends_none(pair):
    errnos = {b"": 1, b"   ": 1, b"[1, 2]": 1, b'{"properties": {}}': 3}
    for body, errno in errnos.items():
        reply = _raw_bytes(pair.ours, body)
        assert (reply["status"], reply["errno"], reply["id"]) == ("error", errno, None)
        assert reply["tb"] is None
    assert _replies_within(pair.circus, list(errnos), seconds=1.0) == 0


def test_quit_stops_both_daemons_the_same(pair):
    same(pair, "quit")
    for peer in pair:
        assert peer.process.wait(30) == 0, peer.output()
    for peer in pair:
        result = peer.ctl("--timeout", "1", "list")
        assert result.rc == 1 and "Timed out" in result.err


# -- raw messages ---------------------------------------------------------------------


def _raw_bytes(peer: Peer, body: bytes) -> dict[str, Any]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(peer.endpoint)
        sock.send(body)
        assert sock.poll(10_000), f"{peer.kind} sent no reply to {body!r}"
        reply: dict[str, Any] = json.loads(sock.recv())
        return reply
    finally:
        sock.close()


def _raw(peer: Peer, message: dict[str, Any]) -> dict[str, Any]:
    return _raw_bytes(peer, json.dumps(message).encode())


def _replies_within(peer: Peer, bodies: list[bytes], seconds: float) -> int:
    """How many of `bodies`, each sent on its own socket, get any reply."""
    context = zmq.Context.instance()
    poller = zmq.Poller()
    sockets = []
    try:
        for body in bodies:
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(peer.endpoint)
            sock.send(body)
            poller.register(sock, zmq.POLLIN)
            sockets.append(sock)
        deadline = time.monotonic() + seconds
        answered: set[zmq.Socket[bytes]] = set()
        while (left := deadline - time.monotonic()) > 0:
            answered |= {sock for sock, _ in poller.poll(int(left * 1000))}
            for sock in answered:
                while sock.poll(0):
                    sock.recv()
        return len(answered)
    finally:
        for sock in sockets:
            sock.close()
