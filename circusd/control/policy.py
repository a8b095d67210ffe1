"""Who may do what: DESIGN.md's table, applied to every request by uid.

- root and circusd's own uid: everything.
- ``endpoint_owner``: read (other users' env values hidden); start, stop,
  restart, reload, signal, kill, incr, decr and reopen any watcher; add,
  set and rm watchers that run as itself, with its own groups, within the
  limits of ``check_change``.
- a member of ``readonly_group``: read (other users' env values hidden).
- anyone else: nothing.

A peer on another host reaching a tcp endpoint declared ``insecure_tcp``
cannot be identified and is treated as root, as Circus treats everyone.
Every refusal, and every change to the set of watchers or to circusd
itself, is written to the ``circusd.audit`` logger.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import pwd
import resource
from dataclasses import dataclass
from typing import Any

from circusd.config.interpolate import referenced_sockets
from circusd.config.model import WatcherConfig
from circusd.control.auth import UNIDENTIFIED, Caller
from circusd.errors import CommandError, Errno, ValueProblem
from circusd.streams import builtin_stream
from circusd.users import (
    Identity,
    enter_problem,
    groups_of,
    resolve,
    write_problem,
)

audit = logging.getLogger("circusd.audit")


class Kind(enum.Enum):
    READ = "read"
    OPERATE = "operate"
    CHANGE = "change"  # add, set, rm: the owner only on its own watchers
    ADMIN = "admin"


KINDS: dict[str, Kind] = {
    **dict.fromkeys(
        (
            "status",
            "list",
            "listsockets",
            "numprocesses",
            "numwatchers",
            "options",
            "get",
            "globaloptions",
            "stats",
            "dstats",
        ),
        Kind.READ,
    ),
    **dict.fromkeys(
        (
            *("start", "stop", "restart", "reload", "signal", "kill", "incr", "decr"),
            "reopen",
        ),
        Kind.OPERATE,
    ),
    **dict.fromkeys(("add", "set", "rm"), Kind.CHANGE),
    **dict.fromkeys(("reloadconfig", "quit", "ipython"), Kind.ADMIN),
}
HIDDEN = "(hidden)"


class PermissionDenied(CommandError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"permission denied: {reason}", Errno.MESSAGE_ERROR)


def kind_of(command: str, properties: dict[str, Any]) -> Kind:
    if command == "restart" and not properties.get("name"):
        return Kind.ADMIN  # restart without a name re-reads the config
    return KINDS.get(command, Kind.ADMIN)


@dataclass(frozen=True)
class Policy:
    daemon_uid: int
    owner_uid: int | None = None
    readonly_gid: int | None = None

    # -- who is who ---------------------------------------------------------------

    def is_admin(self, caller: Caller) -> bool:
        return caller.anonymous_network or caller.uid in (0, self.daemon_uid)

    def is_owner(self, caller: Caller) -> bool:
        return caller.uid is not None and caller.uid == self.owner_uid

    def may_read(self, caller: Caller) -> bool:
        if self.is_admin(caller) or self.is_owner(caller):
            return True
        if self.readonly_gid is None or caller.uid is None:
            return False
        return self.readonly_gid in groups_of(caller.uid, caller.gid)

    def _owner_words(self) -> str:
        if self.owner_uid is None:
            return "the endpoint owner (none is configured)"
        return f"the endpoint owner ({_user_name(self.owner_uid)})"

    def _you(self, caller: Caller) -> str:
        if caller.uid is None:
            return f"circusd could not identify you ({caller.detail})"
        return f"you are {_user_name(caller.uid)}"

    # -- the check before dispatch ------------------------------------------------

    def authorize(self, caller: Caller, command: str, properties: Any) -> Kind:
        """Raise PermissionDenied unless ``caller`` may send this command."""
        props = properties if isinstance(properties, dict) else {}
        kind = kind_of(command, props)
        if self.is_admin(caller):
            return kind
        named = command != "restart" or kind is not Kind.ADMIN
        what = command if named else "restart without a name"
        if kind is Kind.READ and self.may_read(caller):
            return kind
        if kind in (Kind.OPERATE, Kind.CHANGE) and self.is_owner(caller):
            return kind
        if kind is Kind.ADMIN:
            needs = "root or circusd's own user"
        elif kind is Kind.READ:
            needs = f"root, {self._owner_words()}"
            if self.readonly_gid is not None:
                needs += f" or a member of group {self.readonly_gid}"
        else:
            needs = f"root or {self._owner_words()}"
        raise PermissionDenied(f"{what!r} needs {needs}; {self._you(caller)}")

    # -- add, set, rm by the owner ------------------------------------------------

    def owns(self, caller: Caller, config: WatcherConfig) -> bool:
        identity = _identity(config)
        return identity.uid == caller.uid and set(identity.groups or ()) <= (
            groups_of(caller.uid, caller.gid) if caller.uid is not None else set()
        )

    def check_owned(self, caller: Caller, command: str, config: WatcherConfig) -> None:
        if self.is_admin(caller) or self.owns(caller, config):
            return
        raise PermissionDenied(
            f"{command!r} on watcher {config.name!r} needs root: it does not "
            f"run as {_user_name(caller.uid)} with that user's groups"
        )

    def default_user(self, caller: Caller, options: dict[str, Any]) -> dict[str, Any]:
        """``add`` by the owner without a uid: the watcher runs as the owner."""
        if self.is_admin(caller) or caller.uid is None or options.get("uid"):
            return options
        return {**options, "uid": caller.uid}

    def check_change(
        self,
        caller: Caller,
        command: str,
        config: WatcherConfig,
        before: WatcherConfig | None,
    ) -> None:
        """What the owner may ask of a watcher that runs as itself."""
        if self.is_admin(caller):
            return
        assert caller.uid is not None
        name = _user_name(caller.uid)
        identity = _identity(config)
        mine = groups_of(caller.uid, caller.gid)

        def refuse(why: str) -> PermissionDenied:
            return PermissionDenied(f"{command!r} {why} needs root")

        if identity.uid != caller.uid:
            shown = "circusd's own user" if identity.uid is None else identity.uid
            raise refuse(
                f"with uid {shown}: {name} may only run watchers as itself "
                f"(uid {caller.uid})"
            )
        if identity.gid not in mine or not set(identity.groups or ()) <= mine:
            raise refuse(f"with gid {identity.gid}: {name} is not in that group")
        old = before or WatcherConfig(name=config.name, cmd="")
        if config.hooks != old.hooks:
            raise refuse("with hooks")
        if config.copy_env and not old.copy_env:
            raise refuse("with copy_env (circusd's own environment)")
        if _socket_use(config) != _socket_use(old):
            raise refuse("with circusd's sockets")
        for which in ("stdout_stream", "stderr_stream"):
            conf = getattr(config, which)
            if conf == getattr(old, which):
                continue
            if not builtin_stream(conf.get("class", "")):
                raise refuse(f"with {which}.class {conf.get('class')!r}")
            if not conf.get("filename"):
                continue
            problem = write_problem(identity, conf["filename"])
            if problem is not None:
                raise refuse(f"with {which}.filename {conf['filename']}: {problem}")
        if config.working_dir and config.working_dir != old.working_dir:
            problem = enter_problem(identity, config.working_dir)
            if problem is not None:
                raise refuse(f"with working_dir {config.working_dir}: {problem}")
        for limit, (soft, hard) in config.rlimits.items():
            if old.rlimits.get(limit) == (soft, hard):
                continue
            cap = rlimit_cap(limit, caller.pid)
            if _above(soft, cap) or _above(hard, cap):
                raise refuse(
                    f"with rlimit_{limit} {_limit(soft)}:{_limit(hard)} above "
                    f"{name}'s own hard limit {_limit(cap)}"
                )

    # -- reading ------------------------------------------------------------------

    def hides_env(self, caller: Caller, config: WatcherConfig) -> bool:
        if self.is_admin(caller):
            return False
        return _identity(config).uid != caller.uid or caller.uid is None


def _identity(config: WatcherConfig) -> Identity:
    try:
        return resolve(config.uid, config.gid)
    except ValueProblem as exc:
        raise CommandError(f"invalid option 'uid' or 'gid': {exc}") from None


def _socket_use(config: WatcherConfig) -> tuple[Any, ...]:
    return (config.use_sockets, config.stdin_socket, referenced_sockets(config))


def _above(value: int, cap: int) -> bool:
    infinity = resource.RLIM_INFINITY
    return cap != infinity and (value == infinity or value > cap)


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


# /proc/PID/limits names each limit in words, in this order.
_PROC_LIMITS = {
    "cpu": "Max cpu time",
    "fsize": "Max file size",
    "data": "Max data size",
    "stack": "Max stack size",
    "core": "Max core file size",
    "rss": "Max resident set",
    "nproc": "Max processes",
    "nofile": "Max open files",
    "memlock": "Max locked memory",
    "as": "Max address space",
    "locks": "Max file locks",
    "sigpending": "Max pending signals",
    "msgqueue": "Max msgqueue size",
    "nice": "Max nice priority",
    "rtprio": "Max realtime priority",
    "rttime": "Max realtime timeout",
}


def rlimit_cap(name: str, pid: int | None) -> int:
    """The highest value a caller may ask for: its own hard limit (when its
    pid is known) and never more than circusd's own."""
    which = getattr(resource, "RLIMIT_" + name.upper())
    cap = resource.getrlimit(which)[1]
    if pid is None or name not in _PROC_LIMITS:
        return cap
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
            for line in limits:
                if line.startswith(_PROC_LIMITS[name] + " "):
                    hard = line[len(_PROC_LIMITS[name]) :].split()[1]
                    value = resource.RLIM_INFINITY if hard == "unlimited" else int(hard)
                    return value if _above(cap, value) else cap
    except (OSError, ValueError, IndexError):
        pass
    return cap


def _user_name(uid: int | None) -> str:
    if uid is None:
        return "an unidentified caller"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


# -- the request being served ---------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """Who sent the request in progress, and the policy it is judged by."""

    caller: Caller
    policy: Policy


_current: contextvars.ContextVar[Grant | None] = contextvars.ContextVar(
    "circusd_grant", default=None
)
_NOBODY = Grant(UNIDENTIFIED, Policy(daemon_uid=os.geteuid()))


def current() -> Grant:
    """The grant of the request this task serves (an unidentified caller
    outside of any request, so a forgotten ``serving`` fails closed)."""
    return _current.get() or _NOBODY


def serving(grant: Grant) -> contextvars.Token[Grant | None]:
    return _current.set(grant)


def audit_line(
    event: str, command: str, caller: Caller, watcher: Any = None, reason: str = ""
) -> None:
    """``refused ...`` (a warning) or ``allowed ...``, with the caller's uid and pid."""
    fields = [
        f"command={command}",
        f"watcher={watcher if isinstance(watcher, str) and watcher else '-'}",
        caller.describe(),
    ]
    if caller.detail:
        fields.append(f"peer={caller.detail!r}")
    if reason:
        fields.append(f"reason={reason!r}")
    level = logging.WARNING if event == "refused" else logging.INFO
    audit.log(level, "%s %s", event, " ".join(fields))
