"""The supervisors under test, each run in a directory of its own.

A Daemon writes its config for a watcher (program) named ``sleeper`` of N
``sleep 600`` processes, starts, answers one status round trip on request,
and stops, killing whatever children it leaves behind. Control channels are
unix sockets in the daemon's directory; nothing listens on the network.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xmlrpc.client
from pathlib import Path
from typing import Any

import procfs
import zmq

SLEEP = shutil.which("sleep") or "/bin/sleep"
WATCHER = "sleeper"


class DaemonError(Exception):
    pass


class Daemon:
    """What the harness needs from any supervisor."""

    kind = "?"
    has_events = False

    def __init__(self, name: str, binary: Path, directory: Path) -> None:
        self.name = name
        self.binary = binary
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "daemon.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise DaemonError(f"{self.name} is not running")
        return self.process.pid

    def command(self, processes: int) -> list[str]:
        raise NotImplementedError

    def ping(self, timeout: float) -> None:
        """One status round trip; raises if there is no answer in time."""
        raise NotImplementedError

    def start(self, processes: int) -> None:
        if not self.binary.exists():
            raise DaemonError(f"{self.name}: no executable at {self.binary}")
        argv = self.command(processes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUS")}
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
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

    def subscribe(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        raise DaemonError(f"{self.name} has no event stream")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL; then kill any child still alive."""
        if self.process is None:
            return
        leftovers = procfs.children(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in leftovers:
            if procfs.program(pid) == Path(SLEEP).name:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None


class CircusDaemon(Daemon):
    """circusd or Circus 0.19: the same INI file and control protocol."""

    kind = "circus"
    has_events = True

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.directory}/control.sock"

    @property
    def pubsub_endpoint(self) -> str:
        return f"ipc://{self.directory}/pubsub.sock"

    def command(self, processes: int) -> list[str]:
        config = self.directory / "circus.ini"
        config.write_text(
            "[circus]\n"
            f"endpoint = {self.endpoint}\n"
            f"pubsub_endpoint = {self.pubsub_endpoint}\n"
            "multicast_endpoint =\n"
            f"[watcher:{WATCHER}]\n"
            f"cmd = {SLEEP} 600\n"
            f"numprocesses = {processes}\n"
            "graceful_timeout = 5\n"
        )
        return [str(self.binary), str(config)]

    def ping(self, timeout: float) -> None:
        if not hasattr(self, "_client"):
            self._client = CircusClient(self.endpoint)
        reply = self._client.call("status", timeout)
        if reply.get("status") != "ok":
            raise DaemonError(f"{self.name} answered status with {reply}")

    def subscribe(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, f"watcher.{WATCHER}.spawn".encode())
        sub.connect(self.pubsub_endpoint)
        return sub

    def stop(self, timeout: float = 30.0) -> None:
        if hasattr(self, "_client"):
            self._client.close()
            del self._client
        super().stop(timeout)


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

    @property
    def socket_path(self) -> Path:
        return self.directory / "supervisor.sock"

    def command(self, processes: int) -> list[str]:
        config = self.directory / "supervisord.conf"
        d = self.directory
        config.write_text(
            f"[unix_http_server]\nfile = {self.socket_path}\n"
            "[supervisord]\nnodaemon = true\n"
            f"logfile = {d}/supervisord.log\npidfile = {d}/supervisord.pid\n"
            f"childlogdir = {d}\nminfds = 4096\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[program:{WATCHER}]\ncommand = {SLEEP} 600\nnumprocs = {processes}\n"
            "process_name = %(program_name)s_%(process_num)d\n"
            "autorestart = true\nstopwaitsecs = 5\n"
            "stdout_logfile = NONE\nstderr_logfile = NONE\n"
        )
        return [str(self.binary), "-c", str(config)]

    def ping(self, timeout: float) -> None:
        # What `supervisorctl status` asks for: every process's state, on a
        # connection kept open between calls (as the Circus client's is).
        if not hasattr(self, "_proxy"):
            transport = UnixTransport(self.socket_path, timeout)
            self._proxy = xmlrpc.client.ServerProxy(
                "http://localhost/RPC2", transport=transport
            )
        self._proxy.supervisor.getAllProcessInfo()

    def stop(self, timeout: float = 30.0) -> None:
        if hasattr(self, "_proxy"):
            self._proxy("close")()
            del self._proxy
        super().stop(timeout)


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
