"""circusctl's SSH side: targets and hosts files, questions on the terminal
(passphrases, passwords), and running one command on many hosts at once
with prefixed output.

Nothing here knows the commands: ``fan_out`` runs a callable per host in its
own thread, each with its own SSHSession and output, and combines the exit
codes.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import termios
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import zmq

from circusd.client.ssh import (
    InvalidTarget,
    KeyFileError,
    NoTerminal,
    SSHTarget,
    load_config,
    parse_target,
    resolve_chain,
)

if TYPE_CHECKING:
    from circusd.client.ssh import SSHOptions, SSHSession

EXIT_FAILURE = 1
STOP_WAIT = 2.0  # seconds given to the hosts' threads to unwind after Ctrl-C


class TerminalQuestions:
    """Questions to the person at the controlling terminal (/dev/tty, never
    stdin, which may carry data), one at a time, from any thread.

    ``lock`` is held while a question is on the terminal; whatever else
    writes there from other threads (the hosts' output of a fan-out, the
    screen of ``top``) takes it too. ``around`` puts a full-screen view away
    while a question is asked (see ``sharing``). A question cut short by
    Ctrl-C in another thread leaves the terminal without echo; it is
    restored at exit.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.around: Callable[[], contextlib.AbstractContextManager[None]] = (
            contextlib.nullcontext
        )
        self._saved: list[Any] | None = None  # terminal modes while asking
        self._restore_at_exit = False

    def can_ask(self) -> bool:
        try:
            with open("/dev/tty"):
                return True
        except OSError:
            return False

    def ask(self, question: str, echo: bool) -> str:
        """The answer (without its line end); raises NoTerminal."""
        with self.lock, self.around():
            try:
                tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                raise NoTerminal("there is no terminal to ask on") from None
            try:
                self._remember(tty)
                if not echo:
                    return getpass.getpass(question)
                os.write(tty, question.encode())
                return _read_line(tty)
            except EOFError:  # Ctrl-D: no answer
                return ""
            finally:
                self._saved = None
                os.close(tty)

    @contextlib.contextmanager
    def sharing(
        self, around: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> Iterator[None]:
        """While in this block, questions are asked inside ``around()``."""
        self.around = around
        try:
            yield
        finally:
            self.around = contextlib.nullcontext

    def _remember(self, fd: int) -> None:
        self._saved = termios.tcgetattr(fd)
        if not self._restore_at_exit:
            self._restore_at_exit = True
            atexit.register(self._restore)

    def _restore(self) -> None:
        saved = self._saved
        if saved is None:
            return
        with contextlib.suppress(OSError, termios.error), open("/dev/tty") as tty:
            termios.tcsetattr(tty.fileno(), termios.TCSADRAIN, saved)


def _read_line(fd: int) -> str:
    """One line typed on the terminal ``fd`` (in its line mode)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").rstrip("\n")


# The one controlling terminal of this process.
TERMINAL = TerminalQuestions()


class Output:
    """Where a command prints: stdout and stderr, as they are."""

    def echo(self, text: str) -> None:
        click.echo(text)

    def error(self, text: str) -> None:
        click.echo(text, err=True)


class PrefixedOutput(Output):
    """Every line starts with ``LABEL: ``; one host's block is never split."""

    def __init__(self, label: str, lock: threading.RLock, muted: threading.Event):
        self.label = label
        self._lock = lock
        self._muted = muted

    def echo(self, text: str) -> None:
        self._write(text, err=False)

    def error(self, text: str) -> None:
        self._write(text, err=True)

    def _write(self, text: str, err: bool) -> None:
        if self._muted.is_set():
            return
        lines = text.splitlines() or [""]
        with self._lock:
            for line in lines:
                click.echo(f"{self.label}: {line}", err=err)


@dataclass(frozen=True)
class Host:
    """One place to run the command: an SSH target and, optionally, its own
    endpoint (from a hosts file)."""

    target: SSHTarget
    endpoint: str | None
    label: str


def collect_hosts(targets: Sequence[str], hosts_file: str | None) -> list[Host]:
    """The hosts of ``--ssh`` options, then of the hosts file, labelled.

    Raises InvalidTarget naming the bad target, or the file and line.
    """
    entries: list[tuple[str, str | None]] = [(text, None) for text in targets]
    if hosts_file is not None:
        entries += read_hosts_file(hosts_file)
    parsed = [
        (parse_target(text), text.strip(), endpoint) for text, endpoint in entries
    ]
    names = [text for _, text, _ in parsed]
    hosts = []
    for target, text, endpoint in parsed:
        label = text
        if names.count(text) > 1 and endpoint:
            label = f"{text} {endpoint}"
        hosts.append(Host(target, endpoint, label))
    return hosts


def read_hosts_file(path: str) -> list[tuple[str, str | None]]:
    """``[USER@]HOST[:PORT] [ENDPOINT]`` per line; ``#`` starts a comment."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTarget(f"cannot read hosts file {path}: {exc}") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise InvalidTarget(
                f"hosts file {path} line {number}: expected "
                f"[USER@]HOST[:PORT] [ENDPOINT], got {len(words)} words"
            )
        try:
            parse_target(words[0])
        except InvalidTarget as exc:
            raise InvalidTarget(f"hosts file {path} line {number}: {exc}") from None
        entries.append((words[0], words[1] if len(words) == 2 else None))
    if not entries:
        raise InvalidTarget(f"hosts file {path} lists no host")
    return entries


def remote_endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be used over SSH, or None."""
    scheme, _, rest = endpoint.strip().partition("://")
    if scheme == "ipc" and rest and not rest.startswith(("/", "@")):
        return (
            f"ipc endpoint {endpoint!r} is relative: over SSH the path must be "
            "absolute (it is opened on the remote host)"
        )
    return None


def ask_passphrase(path: str) -> str:
    """Ask on the terminal, never on stdin (which may carry data)."""
    try:
        return TERMINAL.ask(f"Enter passphrase for key {path}: ", echo=False)
    except NoTerminal:
        raise KeyFileError(
            f"key file {path} is encrypted and there is no terminal to ask its "
            "passphrase on; add it to ssh-agent with `ssh-add`"
        ) from None


def preload_keys(hosts: Sequence[Host], options: SSHOptions) -> None:
    """Load every key file the hosts may need now, asking passphrases here,
    before any connection starts its clock.

    A host whose config cannot be read is skipped: its session will report it.
    """
    from circusd.client.ssh import agent_blobs

    keys = options.keys
    paths: list[str] = []
    try:
        config = load_config(options.config_file)
    except InvalidTarget:
        config = None
    for host in hosts:
        if config is None:
            break
        try:
            chain = resolve_chain(host.target, config, options.accept_new)
        except InvalidTarget:
            continue
        for settings in chain:
            paths += [path for path in settings.identity_files if path not in paths]
    keys.preload(paths, agent_blobs())


RunHost = Callable[[Host, "SSHSession", Output, "zmq.Context[Any]"], int]


def fan_out(
    hosts: Sequence[Host],
    options: SSHOptions,
    run_host: RunHost,
    interrupted_code: int,
) -> int:
    """Run ``run_host`` for every host in parallel; print a summary of failures.

    Returns 0 if every host returned 0; the failing hosts' code if they all
    agree; 1 otherwise; ``interrupted_code`` after Ctrl-C.
    """
    from circusd.client.ssh import SSHSession

    context: zmq.Context[Any] = zmq.Context()
    lock = TERMINAL.lock  # no line of output in the middle of a question
    muted = threading.Event()
    codes: dict[int, int] = {}
    sessions = [SSHSession(host.target, options) for host in hosts]

    def work(index: int) -> None:
        output = PrefixedOutput(hosts[index].label, lock, muted)
        try:
            codes[index] = run_host(hosts[index], sessions[index], output, context)
        finally:
            sessions[index].close()

    threads = [
        threading.Thread(target=work, args=(i,), name=f"host {h.label}", daemon=True)
        for i, h in enumerate(hosts)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        muted.set()
        stop(sessions, context, threads)
        return interrupted_code
    context.term()
    return summary(hosts, [codes.get(i, EXIT_FAILURE) for i in range(len(hosts))])


def stop(
    sessions: Sequence[SSHSession],
    context: zmq.Context[Any],
    threads: Sequence[threading.Thread],
) -> None:
    """Close every connection; blocked ZeroMQ calls then fail with ETERM."""
    for session in sessions:
        session.close()
    closer = threading.Thread(target=context.term, name="zmq term", daemon=True)
    closer.start()
    closer.join(STOP_WAIT)
    for thread in threads:
        thread.join(0.1)


def summary(hosts: Sequence[Host], codes: Sequence[int]) -> int:
    failed = [(host, code) for host, code in zip(hosts, codes, strict=True) if code]
    if not failed:
        return 0
    names = ", ".join(f"{host.label} (exit {code})" for host, code in failed)
    click.echo(
        f"circusctl: error: {len(failed)} of {len(hosts)} hosts failed: {names}",
        err=True,
    )
    distinct = {code for _, code in failed}
    return distinct.pop() if len(distinct) == 1 else EXIT_FAILURE
