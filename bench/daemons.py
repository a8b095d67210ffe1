"""The supervisors under test, and the floor, each run in a directory of its own.

A Daemon is given a list of Programs (a name, a command, how many processes,
whether they start at once, where stdout goes), writes its own config for
them, starts, answers a status round trip on request, names the command lines
of its CLI, and stops, killing whatever it leaves behind. Control channels
are unix sockets in the daemon's directory; nothing listens on the network.

The floor (FloorDaemon, bench/floor.py) is the least a Python supervisor
could do: a Popen loop, a thread blocked in os.wait() that Popens a
replacement, and a bare ZeroMQ ROUTER that answers every request at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import zmq

HERE = Path(__file__).resolve().parent
SLEEP = shutil.which("sleep") or "/bin/sleep"


class DaemonError(Exception):
    pass


@dataclass(frozen=True)
class Program:
    """One watcher (Circus) or program (supervisor)."""

    name: str
    argv: tuple[str, ...]
    processes: int
    autostart: bool = True
    stdout: Path | None = None  # a file, or None for "discard"
    user: str | None = None  # run as this user, its group and a file limit


# `start_as`: who the processes run as, and the one limit they get.
AS_USER, AS_GROUP, AS_NOFILE = "nobody", "nogroup", 1024


def sleepers(
    processes: int, name: str = "sleeper", user: str | None = None
) -> list[Program]:
    return [
        Program(
            name,
            (SLEEP, "600"),
            max(processes, 1),
            autostart=processes > 0,
            user=user,
        )
    ]


class Daemon:
    """What the harness needs from any supervisor."""

    kind = "?"
    has_events = False
    # Scenarios this daemon takes part in; the floor leaves some out.
    scenarios: frozenset[str] | None = None

    def __init__(self, name: str, binary: Path, directory: Path) -> None:
        self.name = name
        self.binary = binary
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "daemon.log"
        self.config_path = directory / "daemon.conf"
        self._descendants: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        if self.process is None:
            raise DaemonError(f"{self.name} is not running")
        return self.process.pid

    @classmethod
    def takes_part(cls, scenario: str) -> bool:
        return cls.scenarios is None or scenario in cls.scenarios

    # -- what each kind provides ---------------------------------------------

    def render(self, programs: list[Program]) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def ping(self, timeout: float) -> None:
        """One status round trip; raises if there is no answer in time."""
        raise NotImplementedError

    def cli_status(self) -> list[str]:
        raise DaemonError(f"{self.name} has no status command line")

    def cli_reload(self) -> list[str]:
        raise DaemonError(f"{self.name} has no reload command line")

    def subscribe(
        self, context: zmq.Context[zmq.Socket[bytes]], topic: str
    ) -> zmq.Socket[bytes]:
        raise DaemonError(f"{self.name} has no event stream")

    def close_clients(self) -> None:
        """Close the harness's own connections to the daemon."""

    # -- life cycle -------------------------------------------------------------

    def write_config(self, programs: list[Program]) -> None:
        self.config_path.write_text(self.render(programs))

    def start(self, programs: list[Program]) -> None:
        if not self.binary.exists():
            raise DaemonError(f"{self.name}: no executable at {self.binary}")
        self.write_config(programs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUS")}
        for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
            env.pop(name, None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                self.ping(timeout=0.5)
                return
            except Exception as error:  # not up yet, or not answering yet
                if time.monotonic() > deadline:
                    raise DaemonError(
                        f"{self.name} did not answer status within {timeout}s: {error}"
                    ) from error
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise DaemonError(
                f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
            )

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def remember_descendants(self) -> list[psutil.Process]:
        """Note every process below the daemon, so that stop() can end leftovers."""
        if self.process is None:
            return []
        try:
            found: list[psutil.Process] = psutil.Process(self.process.pid).children(
                recursive=True
            )
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self._descendants.setdefault(child.pid, child)
        return found

    def terminate(self) -> None:
        """Ask the daemon to stop everything and exit, as `systemctl stop` does."""
        self.close_clients()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL; then kill any process it left behind."""
        if self.process is None:
            return
        self.remember_descendants()
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for child in self._descendants.values():
            # is_running() compares start times too: a reused pid is left alone.
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()
        self.process = None


class CircusDaemon(Daemon):
    """circusd or Circus 0.19: the same INI file, control protocol and CLI."""

    kind = "circus"
    has_events = True
    _client: CircusClient | None = None
    control_port: int | None = None  # set before start: tcp on loopback, not ipc

    @property
    def endpoint(self) -> str:
        if self.control_port is not None:
            return f"tcp://127.0.0.1:{self.control_port}"
        return f"ipc://{self.directory}/control.sock"

    @property
    def pubsub_endpoint(self) -> str:
        return f"ipc://{self.directory}/pubsub.sock"

    @property
    def circusctl(self) -> Path:
        return self.binary.parent / "circusctl"

    def render(self, programs: list[Program]) -> str:
        lines = [
            "[circus]",
            f"endpoint = {self.endpoint}",
            f"pubsub_endpoint = {self.pubsub_endpoint}",
            "multicast_endpoint =",
        ]
        for program in programs:
            lines += [
                f"[watcher:{program.name}]",
                f"cmd = {' '.join(program.argv)}",
                f"numprocesses = {program.processes}",
                f"autostart = {str(program.autostart).lower()}",
                "graceful_timeout = 5",
            ]
            if program.user is not None:
                lines += [
                    f"uid = {program.user}",
                    f"gid = {AS_GROUP}",
                    f"rlimit_nofile = {AS_NOFILE}",
                    "working_dir = /",  # the harness's directory is private
                ]
            if program.stdout is not None:
                lines += [
                    "stdout_stream.class = FileStream",
                    f"stdout_stream.filename = {program.stdout}",
                ]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        return [str(self.binary), str(self.config_path)]

    def ping(self, timeout: float) -> None:
        if self._client is None:
            self._client = CircusClient(self.endpoint)
        reply = self._client.call("status", timeout)
        if reply.get("status") != "ok":
            raise DaemonError(f"{self.name} answered status with {reply}")

    def cli_status(self) -> list[str]:
        return [str(self.circusctl), "--endpoint", self.endpoint, "status"]

    def cli_reload(self) -> list[str]:
        return [
            *(str(self.circusctl), "--endpoint", self.endpoint, "--timeout", "60"),
            "reloadconfig",
        ]

    def subscribe(
        self, context: zmq.Context[zmq.Socket[bytes]], topic: str
    ) -> zmq.Socket[bytes]:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sub.connect(self.pubsub_endpoint)
        return sub

    def close_clients(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class FloorDaemon(CircusDaemon):
    """bench/floor.py: a Popen loop, a reaper thread and a bare ROUTER."""

    kind = "floor"
    has_events = False
    scenarios = frozenset({"respawn", "start", "status", "cli", "rss", "stop"})
    # start_as: a floor would be CPython's fork path, which circusd avoids.

    def render(self, programs: list[Program]) -> str:
        spec = {
            "endpoint": self.endpoint,
            "programs": [
                {"argv": list(p.argv), "processes": p.processes if p.autostart else 0}
                for p in programs
            ],
        }
        return json.dumps(spec)

    def command(self) -> list[str]:
        return [str(self.binary), str(HERE / "floor.py"), str(self.config_path)]

    def cli_status(self) -> list[str]:
        return [str(self.binary), str(HERE / "floor_ctl.py"), self.endpoint]


class CircusClient:
    """A bare Circus protocol client: one DEALER, one JSON frame each way."""

    def __init__(self, endpoint: str) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def call(self, command: str, timeout: float, **properties: Any) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        message = {"command": command, "properties": properties, "id": request_id}
        self.socket.send(json.dumps(message).encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(int(left * 1000)):
                raise TimeoutError(f"no reply to {command} within {timeout}s")
            reply: dict[str, Any] = json.loads(self.socket.recv())
            if reply.get("id") == request_id:
                return reply

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class SupervisorDaemon(Daemon):
    """supervisord 4.3, controlled over XML-RPC on its unix socket."""

    kind = "supervisor"
    _proxy: xmlrpc.client.ServerProxy | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "supervisor.sock"

    @property
    def supervisorctl(self) -> Path:
        return self.binary.parent / "supervisorctl"

    def render(self, programs: list[Program]) -> str:
        d = self.directory
        lines = [
            f"[unix_http_server]\nfile = {self.socket_path}",
            f"[supervisorctl]\nserverurl = unix://{self.socket_path}",
            "[supervisord]\nnodaemon = true",
            f"logfile = {d}/supervisord.log\npidfile = {d}/supervisord.pid",
            f"childlogdir = {d}\nminfds = 8192",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface",
        ]
        for program in programs:
            stdout = program.stdout or "NONE"
            lines += [
                f"[program:{program.name}]",
                f"command = {' '.join(program.argv)}",
                f"numprocs = {program.processes}",
                "process_name = %(program_name)s_%(process_num)d",
                f"autostart = {str(program.autostart).lower()}",
                "autorestart = true\nstopwaitsecs = 5",
                f"stdout_logfile = {stdout}\nstderr_logfile = NONE",
                # One file, as the Circus FileStream writes: no rotation.
                "stdout_logfile_maxbytes = 0\nstdout_logfile_backups = 0",
            ]
            if program.user is not None:  # its group comes with it; no limits
                lines += [f"user = {program.user}", "directory = /"]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config_path)]

    def ping(self, timeout: float) -> None:
        # What `supervisorctl status` asks for: every process's state, on a
        # connection kept open between calls (as the Circus client's is).
        if self._proxy is None:
            transport = UnixTransport(self.socket_path, timeout)
            self._proxy = xmlrpc.client.ServerProxy(
                "http://localhost/RPC2", transport=transport
            )
        self._proxy.supervisor.getAllProcessInfo()

    def cli_status(self) -> list[str]:
        return [str(self.supervisorctl), "-c", str(self.config_path), "status"]

    def cli_reload(self) -> list[str]:
        return [str(self.supervisorctl), "-c", str(self.config_path), "update"]

    def close_clients(self) -> None:
        if self._proxy is not None:
            self._proxy("close")()
            self._proxy = None


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = self._connection[1]
        if connection is None:
            connection = UnixConnection(self.socket_path, self.timeout)
            self._connection = host, connection
        return connection


FLOOR = "floor"
KINDS: dict[str, tuple[type[Daemon], str, Path]] = {
    "circusd": (CircusDaemon, "CIRCUSD_BIN", HERE.parent / ".venv/bin/circusd"),
    "circus": (
        CircusDaemon,
        "CIRCUS_PEER_BIN",
        HERE.parent / ".peers/circus/bin/circusd",
    ),
    "supervisor": (
        SupervisorDaemon,
        "SUPERVISORD_BIN",
        HERE.parent / ".peers/supervisor/bin/supervisord",
    ),
    FLOOR: (FloorDaemon, "FLOOR_PYTHON", Path(sys.executable)),
}


def binary_of(name: str) -> Path:
    _cls, variable, default = KINDS[name]
    return Path(os.environ.get(variable, default))


def make_daemon(name: str, directory: Path) -> Daemon:
    cls, _variable, _default = KINDS[name]
    return cls(name, binary_of(name), directory)
