"""Child reaping: SIGCHLD wakes the loop, ``waitpid(-1)`` collects every exit.

circusd is a child subreaper, so orphaned grandchildren are re-parented to it
and reaped here too. Nothing polls: the loop sleeps until SIGCHLD arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int], None]  # (pid, wait status)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make orphaned descendants come back to this process to be reaped."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become child subreaper errno=%d", ctypes.get_errno())


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callbacks: dict[int, ExitCallback] = {}

    def start(self) -> None:
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # anything that exited before the handler existed

    def stop(self) -> None:
        self._loop.remove_signal_handler(signal.SIGCHLD)

    def watch(self, pid: int, callback: ExitCallback) -> None:
        self._callbacks[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self._callbacks.pop(pid, None)
            if callback is None:
                log.debug("reaped orphan pid=%d status=%d", pid, status)
                continue
            try:
                callback(pid, status)
            except Exception:
                log.exception("exit handler failed pid=%d", pid)


def exit_code(status: int) -> int:
    """Circus's exit_code: the exit status, or minus the signal number."""
    return os.waitstatus_to_exitcode(status)


def describe_exit(status: int) -> str:
    code = exit_code(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
