"""Talking to systemd: notifications, the watchdog, and the sockets it passes.

systemd tells circusd what it wants through environment variables meant for
circusd alone (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID, LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES). ``Systemd.from_environment`` reads them once at
start and removes them from ``os.environ``, so that no child inherits them,
not even one with ``copy_env``.

Sockets passed by socket activation are recognised by their
FileDescriptorName: ``control``, ``pubsub`` and ``stats`` are the ZeroMQ
endpoints, adopted through ``ActivatedContext``; any other name belongs to the
``[socket:NAME]`` of the same name (see ``circusd.sockets``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from circusd.errors import CircusdError
from circusd.sockets import Listening, inet_address_matches, inspect_fd

log = logging.getLogger(__name__)

PRIVATE_PREFIXES = ("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_")
FIRST_PASSED_FD = 3  # SD_LISTEN_FDS_START
ENDPOINT_NAMES = ("control", "pubsub", "stats")


class ActivationError(CircusdError):
    """A socket passed by systemd cannot be used where the config says."""


# -- notifications ---------------------------------------------------------------


class Notifier:
    """Sends sd_notify datagrams; does nothing when NOTIFY_SOCKET was unset."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failing = False
        if address:
            self._target = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
            )

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        """One datagram of ``KEY=VALUE`` lines."""
        if self._socket is None:
            return
        message = "\n".join(fields).encode()
        try:
            # Not connected: systemd may re-create its socket (daemon-reexec).
            # Never blocking: a manager that stops reading (a full queue)
            # must not stop the event loop; the message is dropped instead.
            self._socket.sendto(message, socket.MSG_DONTWAIT, self._target)
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "cannot notify systemd socket=%s error=%s",
                    self.address,
                    exc.strerror,
                )
            self._failing = True
            return
        if self._failing:
            log.info("notifying systemd again socket=%s", self.address)
        self._failing = False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading config")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping watchers")

    def status(self, text: str) -> None:
        self.send(f"STATUS={_one_line(text)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def status_line(running: int, wanted: int, watchers: int, failed: int = 0) -> str:
    """The STATUS= text: ``12/12 processes running in 4 watchers``."""
    line = (
        f"{running}/{wanted} {_plural(wanted, 'process', 'processes')} running "
        f"in {watchers} {_plural(watchers, 'watcher', 'watchers')}"
    )
    if failed:
        line += f", {failed} failed"
    return line


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


class StatusReporter:
    """Sends STATUS= when the text changes, never on a timer.

    ``changed`` may be called many times in one turn of the event loop (a
    watcher starting ten processes); the text is computed once, after them.
    """

    def __init__(self, notifier: Notifier, describe: Callable[[], str]) -> None:
        self._notifier = notifier
        self._describe = describe
        self._scheduled = False
        self._last: str | None = None
        self.paused = False  # while stopping or reloading, their own text shows

    def changed(self) -> None:
        if self._scheduled or not self._notifier.enabled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.paused:
            return
        text = self._describe()
        if text != self._last:
            self._last = text
            self._notifier.status(text)

    def resume(self) -> None:
        self.paused = False
        self._last = None
        self.changed()


class Watchdog:
    """WATCHDOG=1 at half the interval systemd gave, from the event loop, so
    that a loop that is stuck stops the pings and systemd acts."""

    def __init__(self, notifier: Notifier, interval_usec: int) -> None:
        self._notifier = notifier
        self.period = interval_usec / 2 / 1_000_000
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        log.info("watchdog on period=%.3gs", self.period)
        self._ping()

    def _ping(self) -> None:
        self._notifier.send("WATCHDOG=1")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.period, self._ping)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- what systemd passed ---------------------------------------------------------


@dataclass(frozen=True)
class PassedFd:
    name: str
    fd: int


class Systemd:
    """What systemd gave this process, and the way to talk back to it."""

    def __init__(
        self,
        notify_socket: str | None = None,
        watchdog_usec: int | None = None,
        passed: Iterable[PassedFd] = (),
    ) -> None:
        self.notifier = Notifier(notify_socket)
        self.watchdog = (
            Watchdog(self.notifier, watchdog_usec)
            if watchdog_usec and self.notifier.enabled
            else None
        )
        self.passed = tuple(passed)
        self.status: StatusReporter | None = None

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None
    ) -> Systemd:
        """Read and remove systemd's variables; take the passed fds.

        Every passed fd is made close-on-exec at once: a child gets one only
        through the ``[socket:NAME]`` it names.
        """
        if environ is None:
            environ = os.environ
        pid = os.getpid() if pid is None else pid
        private = {k: environ.pop(k) for k in list(environ) if _is_private(k)}
        passed = _take_listen_fds(private, pid)
        if not passed and "LISTEN_FDS" not in private:
            refuse_listening_stdin()
        return cls(
            notify_socket=private.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_watchdog_usec(private, pid),
            passed=passed,
        )

    def names(self) -> set[str]:
        return {p.name for p in self.passed}

    def fds_named(self, name: str) -> list[int]:
        return [p.fd for p in self.passed if p.name == name]

    def socket_fds(self) -> dict[str, list[int]]:
        """Passed fds for ``[socket:NAME]`` sections: all but the endpoints."""
        found: dict[str, list[int]] = {}
        for item in self.passed:
            if item.name not in ENDPOINT_NAMES:
                found.setdefault(item.name, []).append(item.fd)
        return found

    def endpoint_fds(self, endpoints: Mapping[str, str | None]) -> dict[str, int]:
        """Endpoint -> passed fd, for ``control``/``pubsub``/``stats``.

        ``endpoints`` maps those names to the configured endpoints. Each fd
        must be a listening socket on exactly that endpoint; anything else is
        a mismatch between the unit and the config and stops the start.
        """
        adopted: dict[str, int] = {}
        for name, endpoint in endpoints.items():
            fds = self.fds_named(name)
            if not fds:
                continue
            if len(fds) > 1:
                raise ActivationError(
                    f"systemd passed {len(fds)} sockets named {name}; "
                    f"the {name} endpoint takes exactly one"
                )
            if not endpoint:
                raise ActivationError(
                    f"systemd passed a {name} socket (fd {fds[0]}) but the "
                    f"config sets no {name} endpoint"
                )
            check_endpoint_fd(fds[0], name, endpoint)
            adopted[endpoint] = fds[0]
        return adopted

    # -- telling systemd -------------------------------------------------------

    def start(self, describe_status: Callable[[], str]) -> None:
        """Start the watchdog and status reports (in the running loop)."""
        self.status = StatusReporter(self.notifier, describe_status)
        if self.watchdog is not None:
            self.watchdog.start()

    def changed(self) -> None:
        if self.status is not None:
            self.status.changed()

    def ready(self, status: str | None = None) -> None:
        self.notifier.ready(status)
        if self.status is not None and status is None:
            self.status.resume()

    def reloading(self) -> None:
        if self.status is not None:
            self.status.paused = True
        self.notifier.reloading()

    def reloaded(self, problem: str | None = None) -> None:
        """READY=1 after a reload; with the reason if it was rejected."""
        if problem is not None:
            self.notifier.ready(
                f"reload rejected, running the previous config: {problem}"
            )
            if self.status is not None:
                self.status.paused = False
            return
        self.ready()

    def stopping(self) -> None:
        if self.status is not None:
            self.status.paused = True
        self.notifier.stopping()

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.close()


def _is_private(key: str) -> bool:
    return key.startswith(PRIVATE_PREFIXES)


def _watchdog_usec(private: Mapping[str, str], pid: int) -> int | None:
    raw = private.get("WATCHDOG_USEC")
    if raw is None:
        return None
    owner = private.get("WATCHDOG_PID")
    if owner is not None and owner != str(pid):
        log.info("watchdog not ours WATCHDOG_PID=%s pid=%d", owner, pid)
        return None
    if not raw.isdigit() or int(raw) == 0:
        log.warning("ignored WATCHDOG_USEC=%r: not a positive number", raw)
        return None
    return int(raw)


def _take_listen_fds(private: Mapping[str, str], pid: int) -> list[PassedFd]:
    raw_count = private.get("LISTEN_FDS")
    if raw_count is None:
        return []
    raw_pid = private.get("LISTEN_PID", "")
    if raw_pid != str(pid):
        log.warning(
            "ignored LISTEN_FDS=%s: LISTEN_PID=%s is not this process (pid=%d), "
            "so the fds are not meant for circusd; binding every endpoint itself",
            raw_count,
            raw_pid or "(unset)",
            pid,
        )
        return []
    if not _pidfd_id_matches(private.get("LISTEN_PIDFDID")):
        log.warning(
            "ignored LISTEN_FDS=%s: LISTEN_PIDFDID=%s is not this process; "
            "binding every endpoint itself",
            raw_count,
            private.get("LISTEN_PIDFDID"),
        )
        return []
    if not raw_count.isdigit():
        raise ActivationError(f"LISTEN_FDS={raw_count!r} is not a number of fds")
    count = int(raw_count)
    names = private.get("LISTEN_FDNAMES", "").split(":") if count else []
    if len(names) != count:
        names = ["unknown"] * count  # what sd_listen_fds_with_names() does
    passed = []
    for offset, name in enumerate(names):
        fd = FIRST_PASSED_FD + offset
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ActivationError(
                f"LISTEN_FDS={count} but fd {fd} ({name}) is not open: {exc.strerror}"
            ) from None
        passed.append(PassedFd(name, fd))
    log.info(
        "systemd passed fds=%s",
        ",".join(f"{p.fd}:{p.name}" for p in passed) or "none",
    )
    return passed


def _pidfd_id_matches(raw: str | None) -> bool:
    """LISTEN_PIDFDID (systemd 256+) names the process by its pidfd inode,
    which, unlike a pid, is never reused. Without pidfs it cannot be checked."""
    if raw is None:
        return True
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        return True
    try:
        return str(os.fstat(pidfd).st_ino) == raw
    finally:
        os.close(pidfd)


def refuse_listening_stdin() -> None:
    """An inetd-style unit (StandardInput=socket) passes a listening socket
    on fd 0 and no LISTEN_* variables; circusd would not know what it is for."""
    try:
        info = inspect_fd(0)
    except (CircusdError, OSError):
        return  # not a socket, or closed: an ordinary stdin
    if info.listening:
        raise ActivationError(
            "standard input is a listening socket (StandardInput=socket?); "
            "circusd takes sockets from a .socket unit with FileDescriptorName= "
            "and LISTEN_FDS, not on fd 0"
        )


# -- ZeroMQ endpoints --------------------------------------------------------------


def endpoint_family(endpoint: str) -> tuple[int, ...]:
    if endpoint.startswith("ipc://"):
        return (socket.AF_UNIX,)
    if endpoint.startswith("tcp://"):
        return (socket.AF_INET, socket.AF_INET6)
    raise ActivationError(
        f"endpoint {endpoint} cannot come from systemd: only ipc:// and tcp:// can"
    )


def check_endpoint_fd(fd: int, name: str, endpoint: str) -> Listening:
    """The fd is a listening stream socket on ``endpoint``, or ActivationError."""
    where = f"systemd socket {name} (fd {fd})"
    families = endpoint_family(endpoint)
    try:
        info = inspect_fd(fd)
    except CircusdError as exc:
        raise ActivationError(f"{where}: {exc}") from None
    if info.family not in families or info.kind != socket.SOCK_STREAM:
        raise ActivationError(
            f"{where} is a {info.describe()}, but {endpoint} needs a "
            f"{'unix' if families == (socket.AF_UNIX,) else 'tcp'} stream socket"
        )
    if not info.listening:
        raise ActivationError(f"{where} is not listening (ListenStream= expected)")
    if not _same_endpoint(info, endpoint):
        raise ActivationError(
            f"{where} listens on {info.address_text()}, but the config's "
            f"{name} endpoint is {endpoint}; make them the same"
        )
    return info


def _same_endpoint(info: Listening, endpoint: str) -> bool:
    if info.family == socket.AF_UNIX:
        path = endpoint[len("ipc://") :]
        return os.path.abspath(path) == os.path.abspath(str(info.address))
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not port.isdigit():
        return False
    return inet_address_matches(info.address, host.strip("[]"), int(port))


class _AdoptingSocket(zmq.asyncio.Socket):
    def bind(self, addr: str) -> Any:
        context = self.context
        fd = context.passed_fd(addr) if isinstance(context, ActivatedContext) else None
        if fd is None:
            return super().bind(addr)
        # libzmq takes the fd it is given and closes it with the socket (4.3.4
        # and 4.3.5 alike), so it gets its own copy; systemd keeps the first.
        own = os.dup(fd)
        self.setsockopt(zmq.USE_FD, own)
        try:
            return super().bind(addr)
        except zmq.ZMQError:
            os.close(own)
            raise
        finally:
            self.setsockopt(zmq.USE_FD, -1)


class ActivatedContext(zmq.asyncio.Context):
    """A ZeroMQ context whose sockets bind endpoints that systemd passed by
    adopting its listening socket (ZMQ_USE_FD) instead of binding anew."""

    _socket_class = _AdoptingSocket
    _passed: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self._passed = {}

    def adopt(self, passed: Mapping[str, int]) -> None:
        """Bind these endpoints from these fds (see ``Systemd.endpoint_fds``)."""
        self._passed.update(passed)

    def passed_fd(self, endpoint: str) -> int | None:
        return self._passed.get(endpoint)

    def adopts(self, endpoint: str) -> bool:
        return endpoint in self._passed
