"""Starting one child process, and finding and signalling its whole tree."""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import resource
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from circusd import _spawn
from circusd.config.interpolate import spawn_text
from circusd.config.model import WatcherConfig
from circusd.config.options import CAPABILITY_NAMES, watcher_options_dict
from circusd.errors import SpawnError, ValueProblem
from circusd.users import (
    KEEP,
    Identity,
    enter_problem,
    may_execute,
    user_environment,
)

log = logging.getLogger(__name__)

# Variables meant for circusd only: they never reach a child.
_PRIVATE_ENV_PREFIXES = ("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_")


@dataclass
class Process:
    """One running child of a watcher."""

    pid: int
    wid: int
    outputs: dict[int, int]  # 1, 2 -> circusd's end of a captured pipe
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
    argv: list[str], env: Mapping[str, str], executable: str | None, user: Identity
) -> str:
    """The file a bare program name stands for: the first in PATH that
    ``user`` may execute, as execvp would find it, but only in absolute
    directories (a relative one, or an empty entry, would be taken from the
    child's working directory, which its owner may fill)."""
    program = executable or argv[0]
    if "/" in program:
        return program
    path = env.get("PATH", os.defpath)
    directories = [d for d in path.split(os.pathsep) if os.path.isabs(d)]
    candidates = (os.path.join(d, program) for d in directories)
    found = next((c for c in candidates if may_execute(user, c)), None)
    if found is None:
        # execve would take a bare name relative to the working directory,
        # which may hold a file planted by its owner: never fall back to it.
        raise SpawnError(
            f"cannot execute {program}: not found in PATH {path}", errno.ENOENT
        )
    return found


class IdentityError(SpawnError):
    """An identity or a limit this circusd can never give (it is not root):
    retrying cannot help, so the watcher fails at once."""


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


CAP_SETPCAP, CAP_SYS_RESOURCE = 8, 24


@functools.cache  # circusd's effective set is fixed once it has started
def _has_capability(number: int) -> bool:
    """Whether circusd's effective set holds capability ``number``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    return False


def _check_honourable(config: WatcherConfig) -> None:
    """IdentityError for a setting circusd lacks the capability to apply."""
    if config.capability_bounding_set is not None and not _has_capability(CAP_SETPCAP):
        raise IdentityError(
            "cannot honour capability_bounding_set: it needs CAP_SETPCAP, which "
            f"circusd (uid {os.geteuid()}) does not have",
            errno.EPERM,
        )
    if config.rlimits and not _has_capability(CAP_SYS_RESOURCE):
        try:
            check_rlimits(config.rlimits)
        except ValueProblem as exc:
            raise IdentityError(f"cannot honour {exc}", errno.EPERM) from None


def spawn(request: SpawnRequest) -> Process:
    """Start one child with its identity (circusd._spawn). Raises SpawnError
    with the reason, and no program runs with part of its identity."""
    config = request.config
    identity = _reachable(request.identity)
    _check_honourable(config)
    env = build_env(request)
    argv = build_argv(request, env)
    if not argv:
        raise SpawnError("the command is empty")
    # Encoded before anything else: a value that cannot be passed to execve
    # fails here, with its name, and leaves nothing behind.
    argv_b = [_encode(f"argument {i}", arg) for i, arg in enumerate(argv)]
    env_b = [_encode(f"env {key}", f"{key}={value}") for key, value in env.items()]
    program = _resolve_program(argv, env, config.executable, identity)
    program_b = _encode("the program", program)
    cwd = config.working_dir or _own_directory()
    cwd_b = _encode(_where(config, cwd), cwd)
    if identity.uid not in (None, 0):
        # The child enters cwd as the user; this check only words the reason.
        problem = enter_problem(identity, cwd)
        if problem is not None:
            raise SpawnError(
                f"cannot start in {_where(config, cwd)}: {problem}", errno.EACCES
            )

    theirs: list[int] = []  # the child's ends, closed here once it has them
    outputs: dict[int, int] = {}  # 1, 2 -> circusd's end of a captured pipe
    started = False
    try:
        stdio = [_stdin(config, request.stdin_fd, theirs)]
        for which, closed, captured in (
            (1, config.close_child_stdout, request.capture_stdout),
            (2, config.close_child_stderr, request.capture_stderr),
        ):
            stdio.append(_output(which, closed, captured, outputs, theirs))
        pid = _spawn.spawn(
            program_b,
            argv_b,
            env_b,
            cwd_b,
            stdio,
            sorted(set(request.socket_fds.values())),
            -1 if config.umask is None else config.umask,
            [
                (number, *config.rlimits[name])
                for number, name in _rlimit_numbers(config).items()
            ],
            _dropped_capabilities(config.capability_bounding_set),
            identity.groups,
            -1 if identity.gid is None else identity.gid,
            -1 if identity.uid is None else identity.uid,
            config.no_new_privs,
            config.pdeathsig or 0,
        )
        started = True
    except OSError as exc:
        raise SpawnError(
            _failure(exc, program, config, cwd, identity), exc.errno
        ) from None
    finally:
        for fd in theirs:
            os.close(fd)
        if not started:  # whatever went wrong, circusd's ends go too
            for fd in outputs.values():
                os.close(fd)
    return Process(pid, request.wid, outputs)


def _encode(what: str, text: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError as exc:
        raise SpawnError(
            f"cannot pass {what} to the program: {exc.reason} in {text!r}"
        ) from None


def _stdin(config: WatcherConfig, socket_fd: int | None, theirs: list[int]) -> int:
    if socket_fd is not None:
        return socket_fd
    if config.close_child_stdin:
        return _child_end(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), theirs)
    return -1  # circusd's own


def _output(
    which: int,
    closed: bool,
    captured: bool,
    outputs: dict[int, int],
    theirs: list[int],
) -> int:
    if closed:
        return _child_end(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), theirs)
    if not captured:
        return -1  # circusd's own
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    outputs[which] = read_end
    return _child_end(write_end, theirs)


def _child_end(fd: int, theirs: list[int]) -> int:
    """Keep a descriptor for the child, numbered above 2 (a daemon started
    with a standard descriptor closed gets low numbers back from the kernel,
    which the child's own 0, 1 and 2 would overwrite)."""
    if fd < 3:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(fd)
        fd = high
    theirs.append(fd)
    return fd


def _dropped_capabilities(keep: tuple[str, ...] | None) -> list[int]:
    """The capability numbers a bounding set of ``keep`` leaves out."""
    if keep is None:
        return []
    kept = {CAPABILITY_NAMES.index(name) for name in keep}
    return [cap for cap in range(_last_capability() + 1) if cap not in kept]


@functools.cache
def _last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as file:
        return int(file.read())


def _rlimit_numbers(config: WatcherConfig) -> dict[int, str]:
    return {
        getattr(resource, "RLIMIT_" + name.upper()): name for name in config.rlimits
    }


def _own_directory() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise SpawnError(
            "cannot start in circusd's directory: it was removed (set working_dir)",
            errno.ENOENT,
        ) from None


def _where(config: WatcherConfig, cwd: str) -> str:
    return f"working_dir {cwd}" if config.working_dir else f"circusd's directory {cwd}"


def _failure(
    exc: OSError, program: str, config: WatcherConfig, cwd: str, identity: Identity
) -> str:
    """A failed step of the child's set-up, in words."""
    step = exc.filename
    ids = {
        "setuid": f"uid {identity.uid}",
        "setgid": f"gid {identity.gid}",
        "setgroups": f"groups {identity.groups}",
    }
    if step in ids:
        return f"cannot switch to {ids[step]}: {exc.strerror}"
    if step is None:
        return f"cannot start a process: {exc.strerror}"
    if step == "clone":
        return f"cannot create a process (clone): {exc.strerror}"
    if step == "exec":
        return f"cannot execute {program}: {exc.strerror}"
    if step == "chdir":
        return f"cannot start in {_where(config, cwd)}: {exc.strerror}"
    if step.startswith("rlimit "):
        name = _rlimit_numbers(config).get(int(step.split()[1]), step)
        return f"cannot set rlimit_{name}: {exc.strerror}"
    return f"cannot set up the process ({step}): {exc.strerror}"
