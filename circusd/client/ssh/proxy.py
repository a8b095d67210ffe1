"""ProxyCommand: the SSH connection goes through a command's stdin and stdout.

The command runs as OpenSSH runs it, ``$SHELL -c "exec COMMAND"`` (tokens
already expanded, see target.resolve), in circusctl's process group, so that
it may ask for a password on the terminal as OpenSSH lets it. Its stdin and
stdout are one end of a socket pair and paramiko gets the other end, a real
socket: the end of the command is an end-of-file there at once. (paramiko's
own ProxyCommand reads a pipe and, once the command has closed it, spins on
the end-of-file until its timeout, using the CPU all the while.) What the
command writes on stderr is kept for the error message.

It never outlives circusctl: ``close`` ends it (SIGTERM, then SIGKILL) and
reaps it, and ``setpriv --pdeathsig`` (util-linux) has the kernel send it
SIGTERM when the thread that started it ends, even after a ``kill -9`` of
circusctl. A check of its parent pid before the command runs covers a
circusctl that died before the signal was armed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile

logger = logging.getLogger(__name__)

EXIT_WAIT = 0.2  # seconds for a command whose output ended to exit
TERM_WAIT = 1.0  # seconds between SIGTERM and SIGKILL
# sh -c ARGV0 PPID SHELL COMMAND: run COMMAND with SHELL if our parent is
# still the process that started us.
_LAUNCH = 'test "$PPID" = "$1" && exec "$2" -c "exec $3"'


class ProxyProcess:
    """A running ProxyCommand; ``socket`` is the SSH connection's end."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._errors = tempfile.TemporaryFile()
        shell = os.environ.get("SHELL") or "/bin/sh"
        argv = ["/bin/sh", "-c", _LAUNCH, "circusctl", str(os.getpid()), shell]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [*argv, command],
                    stdin=theirs.fileno(),
                    stdout=theirs.fileno(),
                    stderr=self._errors,
                )
        except OSError:
            self.socket.close()
            self._errors.close()
            raise
        logger.debug("started proxy pid=%d command=%s", self.process.pid, command)

    def failure(self) -> str | None:
        """How the command ended, with the last line it wrote on stderr;
        None while it runs (waits up to EXIT_WAIT for it to end)."""
        try:
            code = self.process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return None
        if code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        said = self._last_error_line()
        return f"{how}: {said}" if said else how

    def close(self) -> None:
        """End the command (if it still runs) and reap it."""
        self.socket.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(TERM_WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._errors.close()

    def _last_error_line(self) -> str:
        self._errors.seek(0, os.SEEK_END)
        size = self._errors.tell()
        self._errors.seek(max(0, size - 4096))
        lines = self._errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""
