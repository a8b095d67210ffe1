"""Starting one child process, and finding and signalling its whole tree."""

from __future__ import annotations

import errno
import logging
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from circusd.config.interpolate import spawn_text
from circusd.config.model import WatcherConfig
from circusd.config.options import CAPABILITY_NAMES, watcher_options_dict
from circusd.errors import SpawnError, ValueProblem
from circusd.users import KEEP, Identity, enter_problem, user_environment

log = logging.getLogger(__name__)

# Variables meant for circusd only: they never reach a child.
_PRIVATE_ENV_PREFIXES = ("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_")


@dataclass
class Process:
    """One running child of a watcher."""

    pid: int
    wid: int
    popen: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    stopping: bool = False  # an exit now is expected, not a crash

    @property
    def age(self) -> float:
        return time.monotonic() - self.started_monotonic


@dataclass(frozen=True)
class SpawnRequest:
    """Everything needed to start one child; built by the watcher."""

    config: WatcherConfig
    wid: int
    identity: Identity
    socket_fds: Mapping[str, int]  # name -> fd in circusd, kept across exec
    stdin_fd: int | None
    capture_stdout: bool
    capture_stderr: bool


def build_argv(request: SpawnRequest, env: Mapping[str, str]) -> list[str]:
    config = request.config
    options = watcher_options_dict(config)

    def expand(template: str) -> str:
        return spawn_text(
            template,
            wid=request.wid,
            sockets=request.socket_fds,
            env=env,
            options=options,
        )

    try:
        cmd = expand(config.cmd)
        if isinstance(config.args, str):
            args = shlex.split(expand(config.args)) if config.args else []
        else:
            args = [expand(arg) for arg in config.args]
        if config.shell:
            line = " ".join([cmd, *map(shlex.quote, args)])
            extra = shlex.split(config.shell_args) if config.shell_args else []
            return ["/bin/sh", "-c", line, *extra]
        return shlex.split(cmd) + args
    except ValueError as exc:
        raise SpawnError(f"cannot build the command line: {exc}") from None


def build_env(request: SpawnRequest) -> dict[str, str]:
    config = request.config
    env: dict[str, str] = dict(os.environ) if config.copy_env else {}
    env.update(user_environment(request.identity))
    env.update(config.env)
    if config.virtualenv:
        _add_virtualenv(env, config.virtualenv, config.virtualenv_py_ver)
    if config.copy_path:
        paths = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            paths.insert(0, env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    for key in list(env):
        if key.startswith(_PRIVATE_ENV_PREFIXES):
            del env[key]
    return env


def _add_virtualenv(env: dict[str, str], venv: str, py_ver: str | None) -> None:
    bin_dir = os.path.join(venv, "bin")
    env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH")]))
    env["VIRTUAL_ENV"] = venv
    lib = os.path.join(venv, "lib")
    versions = (
        [py_ver]
        if py_ver
        else sorted(name for name in _listdir(lib) if name.startswith("python"))
    )
    site = [os.path.join(lib, version, "site-packages") for version in versions]
    site = [path for path in site if os.path.isdir(path)]
    if env.get("PYTHONPATH"):
        site.append(env["PYTHONPATH"])
    if site:
        env["PYTHONPATH"] = os.pathsep.join(site)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _needs_preexec(config: WatcherConfig) -> bool:
    return bool(
        config.rlimits
        or config.no_new_privs
        or config.pdeathsig is not None
        or config.capability_bounding_set is not None
    )


def _preexec(config: WatcherConfig, identity: Identity, cwd: str) -> Callable[[], None]:
    """The one place Python runs between fork and exec: only for the steps
    CPython's subprocess cannot do (rlimits, the prctl settings).

    CPython changes the uid before it calls preexec_fn, and rlimits must be
    set while still root (a user may not raise its hard limits), so on this
    path the identity change is done here too: rlimits, the capability
    bounding set (needs CAP_SETPCAP, so before the uid), groups, gid, uid,
    then the working directory again as the user, no_new_privs and the
    parent-death signal (a uid change would clear it). circusd's event loop
    is its only Python thread, which is what makes this safe enough.
    """
    import _prctl  # python-prctl

    pairs = [
        (getattr(resource, "RLIMIT_" + name.upper()), soft, hard)
        for name, (soft, hard) in config.rlimits.items()
    ]
    drop: list[int] = []
    if config.capability_bounding_set is not None:
        keep = set(config.capability_bounding_set)
        drop = [
            number
            for number, name in enumerate(CAPABILITY_NAMES[: _last_capability() + 1])
            if name not in keep
        ]
    parent = os.getpid()
    pdeathsig = config.pdeathsig

    def apply() -> None:
        for which, soft, hard in pairs:
            resource.setrlimit(which, (soft, hard))
        for number in drop:
            _prctl.prctl(_prctl.PR_CAPBSET_DROP, number)
        if identity.groups is not None:
            os.setgroups(list(identity.groups))
        if identity.gid is not None:
            os.setresgid(identity.gid, identity.gid, identity.gid)
        if identity.uid is not None:
            os.setresuid(identity.uid, identity.uid, identity.uid)
            os.chdir(cwd)  # now with the user's own permissions
        if config.no_new_privs:
            _prctl.prctl(_prctl.PR_SET_NO_NEW_PRIVS, 1)
        if pdeathsig is not None:
            _prctl.prctl(_prctl.PR_SET_PDEATHSIG, pdeathsig)
            if os.getppid() != parent:  # circusd died before the call
                os.kill(os.getpid(), pdeathsig)

    return apply


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as last:
            return int(last.read())
    except (OSError, ValueError):
        return len(CAPABILITY_NAMES) - 1


def check_rlimits(limits: Mapping[str, tuple[int, int]]) -> None:
    """Refuse, before forking, limits that circusd itself could not set."""
    for name, (soft, hard) in limits.items():
        which = getattr(resource, "RLIMIT_" + name.upper())
        _, current_hard = resource.getrlimit(which)
        infinity = resource.RLIM_INFINITY
        if soft != infinity and hard != infinity and soft > hard:
            raise ValueProblem(f"rlimit_{name}: soft limit {soft} is above hard {hard}")
        if current_hard != infinity and (hard == infinity or hard > current_hard):
            raise ValueProblem(
                f"rlimit_{name}: hard limit {_limit(hard)} is above circusd's own "
                f"hard limit {current_hard}"
            )


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _resolve_program(
    argv: list[str], env: Mapping[str, str], executable: str | None
) -> str:
    program = executable or argv[0]
    if "/" in program:
        return program
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    return found or program


class IdentityError(SpawnError):
    """An identity this circusd can never give (it is not root): retrying
    cannot help, so the watcher fails at once."""


def _reachable(identity: Identity) -> Identity:
    """The identity to set, or IdentityError when circusd cannot set it."""
    if os.geteuid() == 0 or not identity.changes:
        return identity
    if identity.uid in (None, os.geteuid()) and identity.gid in (None, os.getegid()):
        return KEEP  # already running as that user: nothing to change
    raise IdentityError(
        f"cannot run as uid={identity.uid} gid={identity.gid}: circusd runs as "
        f"uid {os.geteuid()}, not root",
        errno.EPERM,
    )


def spawn(request: SpawnRequest) -> Process:
    """Fork and exec one child. Raises SpawnError with the reason."""
    config = request.config
    identity = _reachable(request.identity)
    env = build_env(request)
    argv = build_argv(request, env)
    if not argv:
        raise SpawnError("the command is empty")
    program = _resolve_program(argv, env, config.executable)
    cwd = config.working_dir or os.getcwd()
    if identity.uid not in (None, 0):
        # subprocess enters cwd while still root: check the user could.
        problem = enter_problem(identity, cwd)
        if problem is not None:
            which = "working_dir" if config.working_dir else "circusd's directory"
            raise SpawnError(f"cannot start in {which} {cwd}: {problem}", errno.EACCES)

    kwargs: dict[str, object] = {}
    if _needs_preexec(config):
        kwargs["preexec_fn"] = _preexec(config, identity, cwd)
    else:
        if identity.uid is not None:
            kwargs["user"] = identity.uid
        if identity.gid is not None:
            kwargs["group"] = identity.gid
        if identity.groups is not None:
            kwargs["extra_groups"] = list(identity.groups)

    stdin: int | None = subprocess.DEVNULL if config.close_child_stdin else None
    if request.stdin_fd is not None:
        stdin = request.stdin_fd
    try:
        popen = subprocess.Popen(  # type: ignore[call-overload]  # noqa: S603
            argv,
            executable=program,
            stdin=stdin,
            stdout=_output(config.close_child_stdout, request.capture_stdout),
            stderr=_output(config.close_child_stderr, request.capture_stderr),
            cwd=cwd,
            env=env,
            close_fds=True,
            pass_fds=tuple(request.socket_fds.values()),
            start_new_session=True,
            umask=config.umask if config.umask is not None else -1,
            **kwargs,  # type: ignore[arg-type]
        )
    except OSError as exc:
        where = exc.filename or program
        if exc.errno == errno.ENOENT and exc.filename == cwd:
            where = f"working_dir {cwd}"
        raise SpawnError(f"cannot execute {where}: {exc.strerror}", exc.errno) from None
    except subprocess.SubprocessError as exc:
        raise SpawnError(f"cannot set up the process: {exc}") from None
    return Process(popen.pid, request.wid, popen)


def _output(closed: bool, captured: bool) -> int | None:
    if closed:
        return subprocess.DEVNULL
    return subprocess.PIPE if captured else None
