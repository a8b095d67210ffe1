"""Starting one child process, and finding and signalling its whole tree."""

from __future__ import annotations

import errno
import logging
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from circusd.config.interpolate import spawn_text
from circusd.config.model import WatcherConfig
from circusd.config.options import watcher_options_dict
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


def _tool(name: str) -> str | None:
    return shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")


# util-linux's prlimit and setpriv set up what CPython's subprocess cannot
# without forking the whole daemon: its vfork path allows cwd, umask and a new
# session, but not a change of identity, limits or prctl settings. The child
# execs prlimit (rlimits, still as root), which execs setpriv (bounding set,
# groups, gid, uid, then no_new_privs and the parent-death signal, in that
# order), which execs the program. No Python runs in the child, and the
# daemon's share of a spawn stays that of a plain one.
PRLIMIT = _tool("prlimit")
SETPRIV = _tool("setpriv")


def _setup_argv(config: WatcherConfig, identity: Identity) -> list[str]:
    """The prlimit and setpriv words to put before the program, if any."""
    words: list[str] = []
    if config.rlimits:
        words += [
            _require(PRLIMIT, "prlimit", "rlimit_*"),
            *(
                f"--{name}={_limit(soft)}:{_limit(hard)}"
                for name, (soft, hard) in sorted(config.rlimits.items())
            ),
            "--",
        ]
    steps: list[str] = []
    if config.capability_bounding_set is not None:
        keep = ("+" + name for name in config.capability_bounding_set)
        steps.append(",".join(["--bounding-set=-all", *keep]))
    if identity.groups is not None:
        groups = ",".join(map(str, identity.groups))
        steps.append(f"--groups={groups}" if groups else "--clear-groups")
    if identity.gid is not None:
        steps.append(f"--regid={identity.gid}")
    if identity.uid is not None:
        steps.append(f"--reuid={identity.uid}")
    if config.no_new_privs:
        steps.append("--no-new-privs")
    if config.pdeathsig is not None:
        steps.append(f"--pdeathsig={signal.Signals(config.pdeathsig).name}")
    if steps:
        words += [
            _require(SETPRIV, "setpriv", "uid, gid and the prctl options"),
            *steps,
            "--",
        ]
    return words


def _require(path: str | None, name: str, what: str) -> str:
    if path is None:
        raise SpawnError(f"{what} need util-linux's {name}, which is not installed")
    return path


def _check_executable(program: str) -> None:
    """Report a missing or non-executable program before the fork, as exec
    would have; exec itself happens in setpriv or prlimit, which can only
    print the reason and exit 126 or 127."""
    try:
        mode = os.stat(program).st_mode
    except OSError as exc:
        raise SpawnError(
            f"cannot execute {program}: {exc.strerror}", exc.errno
        ) from None
    if stat.S_ISDIR(mode) or not mode & 0o111:
        raise SpawnError(
            f"cannot execute {program}: {os.strerror(errno.EACCES)}", errno.EACCES
        )


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

    setup = _setup_argv(config, identity)
    if setup:
        _check_executable(program)
        # setpriv finds the program on PATH as exec would; an explicit
        # `executable` takes argv[0]'s place (setpriv cannot set both).
        argv = [*setup, config.executable or argv[0], *argv[1:]]
        program = setup[0]

    stdin: int | None = subprocess.DEVNULL if config.close_child_stdin else None
    if request.stdin_fd is not None:
        stdin = request.stdin_fd
    try:
        popen = subprocess.Popen(  # noqa: S603
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
