"""Every control command, dispatched through one closed table.

A handler validates its properties and either answers at once (a dict) or
returns ``Work``: a coroutine plus how to turn its result into reply fields.
Work is awaited when the request says ``waiting``; otherwise the reply is a
plain ok and the work goes on (its failure is logged). Validation errors are
always reported straight away, whatever ``waiting`` says.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from circusd import stats
from circusd.config import values
from circusd.config.loader import load
from circusd.config.model import WatcherConfig
from circusd.config.options import (
    apply_watcher_option,
    watcher_option_value,
    watcher_options_dict,
)
from circusd.control import policy
from circusd.control.protocol import Properties
from circusd.errors import CommandError, ConfigError, Errno, ValueProblem
from circusd.plugin_watchers import PluginWatcher, is_plugin_name
from circusd.streams import make_stream
from circusd.tree import children_of
from circusd.users import resolve

if TYPE_CHECKING:
    from circusd.daemon import Daemon
    from circusd.watcher import Watcher

log = logging.getLogger(__name__)


@dataclass
class Work:
    job: Coroutine[Any, Any, Any]
    reply: Callable[[Any], dict[str, Any]] = lambda _: {}


Result = dict[str, Any] | Work
Handler = Callable[["Daemon", Properties], Awaitable[Result]]


def _info(result: Any) -> dict[str, Any]:
    return {"info": result}


# -- watcher lifecycle --------------------------------------------------------


def _selected(daemon: Daemon, props: Properties) -> list[Watcher] | None:
    name = props.text("name")
    if name is None or name == "":
        return None
    return daemon.arbiter.match(name, props.text("match", "glob"))


async def start(daemon: Daemon, props: Properties) -> Result:
    watchers = _selected(daemon, props)
    if watchers is None:
        return Work(daemon.arbiter.start())
    if len(watchers) == 1:
        watcher = watchers[0]
        return Work(watcher.start(), lambda info: _started(watcher, info))
    return Work(_each(watchers, "start"))


def _started(watcher: Watcher, info: dict[str, list[int]]) -> dict[str, Any]:
    """With `waiting`, a watcher that could not start at all is an error."""
    if not watcher.processes and watcher.reason and watcher.numprocesses:
        raise CommandError(
            f"watcher {watcher.name} did not start: {watcher.reason}",
            Errno.COMMAND_ERROR,
        )
    return {"info": info}


async def stop(daemon: Daemon, props: Properties) -> Result:
    watchers = _selected(daemon, props)
    if watchers is None:
        watchers = daemon.arbiter.by_priority(daemon.arbiter.watchers.values())
    if len(watchers) == 1:
        return Work(watchers[0].stop(), lambda _: {"info": None})
    return Work(_each(watchers, "stop"))


async def restart(daemon: Daemon, props: Properties) -> Result:
    watchers = _selected(daemon, props)
    if watchers is None:
        return Work(daemon.restart_all())
    if len(watchers) == 1:
        return Work(watchers[0].restart(), _info)
    return Work(_each(watchers, "restart"))


async def _each(watchers: list[Watcher], action: str) -> None:
    for watcher in watchers:
        await getattr(watcher, action)()


async def reload(daemon: Daemon, props: Properties) -> Result:
    graceful = props.flag("graceful", True)
    sequential = props.flag("sequential")
    name = props.text("name")
    if name:
        watcher = daemon.arbiter.get(name)
        return Work(watcher.reload(graceful, sequential), _info)
    return Work(daemon.arbiter.reload_all(graceful, sequential))


async def reloadconfig(daemon: Daemon, props: Properties) -> Result:
    # The file is read and checked before the reply, waiting or not, so a
    # broken edit is reported to the one who asked for the reload.
    path = daemon.arbiter.config.path
    try:
        config = load(path) if path else None
    except ConfigError as exc:
        raise CommandError(f"config rejected, keeping the running one: {exc}") from None
    return Work(daemon.reload_config(config))


async def reopen(daemon: Daemon, props: Properties) -> Result:
    """circusd's own: reopen the output files of watcher NAME, or of every
    watcher, after an outside log rotation (what SIGUSR1 does)."""
    watchers = _selected(daemon, props)
    for watcher in daemon.arbiter.watchers.values() if watchers is None else watchers:
        watcher.reopen_streams()
    return {}


async def quit_(daemon: Daemon, props: Properties) -> Result:
    return Work(daemon.shutdown())


# -- adding, removing and changing watchers -----------------------------------

# Options `add` and `set` may not carry: they would make circusd itself run
# code named by the caller. They can only come from the config file.
_CONFIG_FILE_ONLY = ("hooks",)


def _has_nul(value: Any) -> bool:
    """A NUL byte anywhere in a JSON value; no path, name or argument has one."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(item) for k, item in value.items())
    return False


def _apply_options(
    base: WatcherConfig,
    options: dict[str, Any],
    grant: policy.Grant,
    command: str = "add",
) -> WatcherConfig:
    """The new config; refused before anything is opened or spawned when
    the caller may not ask for it."""
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or key.lower().startswith(_CONFIG_FILE_ONLY):
            why = f"option {key!r} can only be set in the config file"
            if not grant.policy.is_admin(grant.caller):
                raise policy.PermissionDenied(f"{command!r} with {why}")
            raise CommandError(why)
        if _has_nul(value):
            raise CommandError(f"invalid option {key!r}: contains a NUL byte")
        try:
            apply_watcher_option(changes, base, key, value)
        except ValueProblem as exc:
            raise CommandError(f"invalid option {key!r}: {exc}") from None
    config = base.replace(**changes)
    if config.singleton and config.numprocesses > 1:
        raise CommandError("a singleton watcher runs at most one process")
    _check("uid' or 'gid", lambda: resolve(config.uid, config.gid))
    before = base if command == "set" else None
    grant.policy.check_change(grant.caller, command, config, before)
    owner = resolve(config.uid, config.gid)
    for which in ("stdout_stream", "stderr_stream"):
        conf = getattr(config, which)
        if conf and conf != getattr(base, which):

            def attempt(conf: Any = conf) -> None:
                make_stream(conf, config.name, 1, owner).release()

            _check(which, attempt)
    return config


def _check(option: str, attempt: Callable[[], object]) -> None:
    """Run a validation step; any failure becomes one errno-3 line naming it."""
    try:
        attempt()
    except (ValueProblem, ValueError, OverflowError) as exc:
        raise CommandError(f"invalid option {option!r}: {exc}") from None
    except OSError as exc:
        raise CommandError(
            f"invalid option {option!r}: {exc.filename}: {exc.strerror}", Errno.OS_ERROR
        ) from None


async def add(daemon: Daemon, props: Properties) -> Result:
    name = props.text("name", required=True)
    if not name.strip() or any(
        c.isspace() or c == "." or not c.isprintable() for c in name
    ):
        raise CommandError(
            f"invalid watcher name {name!r}: no spaces, dots or control characters"
        )
    if is_plugin_name(name):
        raise CommandError(
            f"invalid watcher name {name!r}: names starting with 'plugin:' "
            "belong to the config file's [plugin:NAME] sections"
        )
    cmd = props.text("cmd", required=True)
    args = props.values.get("args", "")
    options = props.mapping("options")
    options = {**options, "cmd": cmd}
    if args:
        options["args"] = args
    grant = policy.current()
    options = grant.policy.default_user(grant.caller, options)
    config = _apply_options(WatcherConfig(name=name, cmd=cmd), options, grant)
    if name.lower() in daemon.arbiter.watchers:
        raise CommandError(f"watcher {name!r} already exists", Errno.COMMAND_ERROR)
    should_start = props.flag("start")

    def reply(watcher: Watcher) -> dict[str, Any]:
        return {"started": watcher.pids, "kept": []} if should_start else {}

    return Work(daemon.arbiter.add_watcher(config, should_start), reply)


async def rm(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    grant = policy.current()
    grant.policy.check_owned(grant.caller, "rm", watcher.config)
    return Work(daemon.arbiter.remove_watcher(watcher, props.flag("nostop")))


async def set_(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    if isinstance(watcher, PluginWatcher):
        raise CommandError(
            f"{watcher.name} is a plugin: change its [{watcher.name}] section "
            "in the config file, then reloadconfig"
        )
    options = props.mapping("options", required=True)
    grant = policy.current()
    grant.policy.check_owned(grant.caller, "set", watcher.config)
    config = _apply_options(watcher.config, options, grant, "set")
    return Work(watcher.apply_config(config))


async def incr(daemon: Daemon, props: Properties) -> Result:
    return _scale(daemon, props, 1)


async def decr(daemon: Daemon, props: Properties) -> Result:
    return _scale(daemon, props, -1)


def _scale(daemon: Daemon, props: Properties, sign: int) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    nb = props.integer("nb", 1, low=0, high=10_000)
    if watcher.config.singleton:
        return {"numprocesses": 1, "singleton": True}
    target = min(max(watcher.numprocesses + sign * nb, 0), 10_000)
    return Work(watcher.set_numprocesses(target), lambda count: {"numprocesses": count})


# -- signals ------------------------------------------------------------------


def _signum(value: Any) -> int:
    try:
        return values.signum(value)
    except ValueProblem as exc:
        raise CommandError(f"signal invalid: {exc}") from None
    except ValueError:  # int() on digits it cannot read, such as "²"
        raise CommandError(f"signal invalid: {value!r}") from None


def _own_pid(watcher: Watcher, props: Properties, key: str = "pid") -> int | None:
    pid = props.integer(key, low=1)
    if pid is not None and pid not in watcher.processes:
        raise CommandError(f"process {pid} does not belong to watcher {watcher.name}")
    return pid


async def signal(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    if "signum" not in props.values:
        raise CommandError("message invalid 'signum' is missing")
    signum = _signum(props.values["signum"])
    pid = _own_pid(watcher, props)
    childpid = props.integer("childpid", low=1)
    if childpid is not None:
        if pid is None:
            raise CommandError("message invalid 'childpid' needs 'pid'")
        if childpid not in children_of(pid, recursive=True):
            raise CommandError(f"process {childpid} is not a child of {pid}")
        os.kill(childpid, signum)
        return {}
    watcher.send_signal(signum, pid, props.flag("children"), props.flag("recursive"))
    return {}


async def kill(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    pid = _own_pid(watcher, props)
    signum = _signum(props.values.get("signum", watcher.config.stop_signal))
    timeout = props.number("graceful_timeout", watcher.config.graceful_timeout)
    targets = [watcher.processes[pid]] if pid else list(watcher.processes.values())
    return Work(watcher.kill(targets, signum, timeout))


# -- reading ------------------------------------------------------------------


async def status(daemon: Daemon, props: Properties) -> Result:
    name = props.text("name")
    if name:
        watcher = daemon.arbiter.get(name)
        reply: dict[str, Any] = {"status": watcher.status()}
        if watcher.reason:
            reply["reason"] = watcher.reason
        return reply
    watchers = daemon.arbiter.watchers.values()
    reasons = {w.name: w.reason for w in watchers if w.reason}
    result: dict[str, Any] = {"statuses": {w.name: w.status() for w in watchers}}
    if reasons:
        result["reasons"] = reasons
    return result


async def list_(daemon: Daemon, props: Properties) -> Result:
    name = props.text("name")
    if name:
        return {"pids": daemon.arbiter.get(name).pids}
    return {"watchers": sorted(daemon.arbiter.watchers)}


async def listsockets(daemon: Daemon, props: Properties) -> Result:
    sockets = [
        sock.describe()
        for sock in daemon.arbiter.sockets.values()
        if sock.sock is not None
    ]
    return {"sockets": sorted(sockets, key=lambda s: s["fd"])}


async def numprocesses(daemon: Daemon, props: Properties) -> Result:
    # Processes that exist now (a stopped watcher has 0), not the target; the
    # name is echoed as the client spelled it. Both as in Circus.
    name = props.text("name")
    if name:
        watcher = daemon.arbiter.get(name)
        return {"numprocesses": len(watcher.processes), "watcher_name": name}
    return {"numprocesses": daemon.arbiter.numprocesses()}


async def numwatchers(daemon: Daemon, props: Properties) -> Result:
    return {"numwatchers": len(daemon.arbiter.watchers)}


# Circus's names for the stream options, kept so that scripts reading them
# from `options` or `get` go on working.
_CIRCUS_ALIASES = {
    "stdout_stream": "stdout_stream_conf",
    "stderr_stream": "stderr_stream_conf",
}
_CIRCUS_NAMES = {alias: key for key, alias in _CIRCUS_ALIASES.items()}


async def options(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    everything = watcher_options_dict(watcher.config)
    if _hides_env(watcher):
        everything["env"] = dict.fromkeys(everything["env"], policy.HIDDEN)
    for key, alias in _CIRCUS_ALIASES.items():
        everything[alias] = everything[key]
    # Sorted, as Circus sends them: circusctl prints them in this order.
    return {"options": dict(sorted(everything.items()))}


async def get(daemon: Daemon, props: Properties) -> Result:
    watcher = daemon.arbiter.get(props.text("name", required=True))
    result: dict[str, Any] = {}
    for key in props.strings("keys", required=True):
        try:
            result[key] = watcher_option_value(
                watcher.config, _CIRCUS_NAMES.get(key, key)
            )
        except KeyError:
            raise CommandError(f"{key!r} option not found") from None
        if key == "env" and _hides_env(watcher):
            result[key] = dict.fromkeys(result[key], policy.HIDDEN)
    return {"options": result}


def _hides_env(watcher: Watcher) -> bool:
    """Environment values may hold secrets: a caller other than root sees
    those of its own watchers only."""
    grant = policy.current()
    return grant.policy.hides_env(grant.caller, watcher.config)


async def globaloptions(daemon: Daemon, props: Properties) -> Result:
    circus = daemon.arbiter.config.circus
    # Circus's key order (circusctl prints them in it). Circus spells a
    # disabled multicast endpoint as "", so circusd does too.
    everything = {
        "endpoint": circus.endpoint,
        "stats_endpoint": daemon.metrics.stats_endpoint,  # None when not served
        "pubsub_endpoint": circus.pubsub_endpoint,
        "check_delay": circus.check_delay,
        "multicast_endpoint": circus.multicast_endpoint or "",
    }
    option = props.text("option")
    if option:
        if option not in everything:
            raise CommandError(f"{option!r} not an existing option")
        return {"options": {option: everything[option]}}
    return {"options": everything}


# Sampling runs in a worker thread: with hundreds of processes it takes a
# noticeable time, during which the event loop goes on serving requests.
_sampler = stats.Sampler()


async def _sample(wanted: list[stats.Wanted]) -> dict[int, dict[str, Any] | str]:
    return await asyncio.to_thread(_sampler.batch, wanted)


def _wanted(watcher: Watcher) -> list[stats.Wanted]:
    return [stats.Wanted(pid, p.started, p.wid) for pid, p in watcher.processes.items()]


async def stats_(daemon: Daemon, props: Properties) -> Result:
    name = props.text("name")
    if not name:
        watchers = list(daemon.arbiter.watchers.values())
        wanted = {w.name: _wanted(w) for w in watchers}
        found = await _sample([item for items in wanted.values() for item in items])
        return {
            "infos": {
                watcher: {str(item.pid): found[item.pid] for item in items}
                for watcher, items in wanted.items()
            }
        }
    watcher = daemon.arbiter.get(name)
    pid = props.integer("process", low=1)
    if pid is not None:
        if pid not in watcher.processes:
            raise CommandError(f"process {pid} not found in watcher {watcher.name}")
        process = watcher.processes[pid]
        found = await _sample([stats.Wanted(pid, process.started, process.wid)])
        return {"process": pid, "info": found[pid]}
    items = _wanted(watcher)
    found = await _sample(items)
    # The name as the client spelled it, as in Circus (circusctl prints it).
    return {"name": name, "info": {str(item.pid): found[item.pid] for item in items}}


async def dstats(daemon: Daemon, props: Properties) -> Result:
    pid = os.getpid()
    return {"info": (await _sample([stats.Wanted(pid)]))[pid]}


async def ipython(daemon: Daemon, props: Properties) -> Result:
    raise CommandError(
        "the ipython command is not supported: it would run "
        "arbitrary code inside circusd",
        Errno.UNKNOWN_COMMAND,
    )


# The closed table. A name not here is "unknown command", whatever it is.
COMMANDS: dict[str, Handler] = {
    "add": add,
    "rm": rm,
    "start": start,
    "stop": stop,
    "restart": restart,
    "reload": reload,
    "reloadconfig": reloadconfig,
    "reopen": reopen,
    "quit": quit_,
    "incr": incr,
    "decr": decr,
    "set": set_,
    "signal": signal,
    "kill": kill,
    "status": status,
    "list": list_,
    "listsockets": listsockets,
    "numprocesses": numprocesses,
    "numwatchers": numwatchers,
    "options": options,
    "get": get,
    "globaloptions": globaloptions,
    "stats": stats_,
    "dstats": dstats,
    "ipython": ipython,
}
