"""Who gets in: ipc by file mode and by uid, loopback tcp by uid, other tcp
only with CURVE (or a config that says it is insecure); cases B06."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from tests.conftest import CIRCUSD, ServiceUser, call
from tests.security.conftest import Intruder, audit_lines

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_other_user_cannot_reach_the_ipc_endpoint(
    start_daemon, workdir, request_as, owner: ServiceUser, intruder: Intruder
):
    daemon = start_daemon(f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}

        [watcher:w]
        cmd = sleep 300
        """)
    assert request_as(intruder.name, daemon.endpoint, "status") == (
        "CONNECT-ERROR EACCES"
    )
    assert request_as(owner.name, daemon.endpoint, "status")["status"] == "ok"

    # Even where the file mode is opened up, the uid decides.
    (workdir / "ctl.sock").chmod(0o666)
    for command in ("status", "stop", "quit"):
        reply = request_as(intruder.name, daemon.endpoint, command, name="w")
        assert reply["status"] == "error" and reply["errno"] == 3, reply
        assert reply["reason"].startswith(f"permission denied: {command!r} needs ")
        assert f"uid {intruder.uid}" in reply["reason"]
    assert daemon.ok("status", name="w")["status"] == "active"
    refusals = audit_lines(daemon.output())
    assert len(refusals) == 3
    assert all(f"uid={intruder.uid} " in line for line in refusals)


def test_loopback_tcp_callers_are_known_by_uid(
    start_daemon, workdir, request_as, owner: ServiceUser, intruder: Intruder
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    daemon = start_daemon(f"""
        [circus]
        endpoint = {endpoint}
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}

        [watcher:w]
        cmd = sleep 300
        """)
    stranger = request_as(intruder.name, endpoint, "stop", name="w")
    assert stranger["status"] == "error", stranger
    assert stranger["reason"].startswith("permission denied: 'stop' needs root")
    assert f"uid={intruder.uid} " in audit_lines(daemon.output())[-1]
    assert request_as(owner.name, endpoint, "status")["status"] == "ok"
    refused = request_as(owner.name, endpoint, "quit")
    assert refused["reason"].startswith("permission denied: 'quit' needs root")
    assert request_as("root", endpoint, "status", name="w")["status"] == "active"


def test_an_idle_connection_from_another_user_hides_nobody(
    start_daemon, workdir, request_as, owner: ServiceUser, intruder: Intruder
):
    """A client is told apart from others on loopback only once it has sent
    its ZMTP greeting: a connection that sends nothing (held open by another
    user) must not make every later caller unidentifiable."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    start_daemon(f"""
        [circus]
        endpoint = {endpoint}
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}

        [watcher:w]
        cmd = sleep 300
        """)
    idle = subprocess.Popen(
        ["runuser", "-u", intruder.name, "--", "/usr/bin/python3", "-c",
         "import socket, sys, time\n"
         f"held = [socket.create_connection(('127.0.0.1', {port})) for _ in range(3)]\n"
         "print('holding', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert idle.stdout is not None and idle.stdout.readline() == "holding\n"
        reply = request_as(owner.name, endpoint, "status")
        stranger = request_as(intruder.name, endpoint, "stop", name="w")
    finally:
        idle.communicate(timeout=10)  # closes its stdin: it lets go

    assert reply["status"] == "ok", reply
    assert f"uid {intruder.uid}" in stranger["reason"], stranger
    assert request_as("root", endpoint, "status", name="w")["status"] == "active"


def test_connections_closed_at_once_never_get_the_next_request_refused(
    start_daemon, workdir
):
    """Reachability checks (connect, close) just before a request: circusd
    lets them go once no request waits, so the request is still known."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    start_daemon(f"""
        [circus]
        endpoint = {endpoint}
        pubsub_endpoint = ipc://{workdir}/pub.sock

        [watcher:w]
        cmd = sleep 300
        """)
    replies = []
    for _ in range(30):
        for _ in range(3):
            socket.create_connection(("127.0.0.1", port)).close()
        replies.append(call(endpoint, "status", name="w"))
    refused = [r for r in replies if r.get("status") != "active"]
    assert not refused, f"{len(refused)} of 30 refused: {refused[:2]}"


def test_tcp_beyond_loopback_without_curve_is_a_config_error(start_daemon, workdir):
    port = free_port()
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = tcp://0.0.0.0:{port}
        pubsub_endpoint = ipc://{workdir}/pub.sock

        [watcher:w]
        cmd = sleep 300
        """,
        ready=False,
    )
    assert daemon.wait_exit(10) == 78  # a config error: systemd does not retry
    assert "configuration error" in daemon.output()
    assert "insecure_tcp" in daemon.output()
    assert f"tcp://0.0.0.0:{port}" in daemon.output()


def test_insecure_tcp_starts_when_said_in_so_many_words(start_daemon, workdir):
    port = free_port()
    daemon = start_daemon(f"""
        [circus]
        endpoint = tcp://0.0.0.0:{port}
        pubsub_endpoint = ipc://{workdir}/pub.sock
        insecure_tcp = true

        [watcher:w]
        cmd = sleep 300
        """)
    from tests.conftest import call

    assert call(f"tcp://127.0.0.1:{port}", "status", name="w")["status"] == "active"
    assert daemon.process.poll() is None


def curve_request(endpoint, server_public, keys, timeout=3.0):
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey = keys
        sock.curve_serverkey = server_public
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"command": "status", "id": 1}).encode())
        if not sock.poll(int(timeout * 1000)):
            return None
        return json.loads(sock.recv())
    finally:
        sock.close()


@pytest.fixture
def curve_daemon(start_daemon, workdir: Path, owner: ServiceUser):
    """circusd on loopback tcp with CURVE; the owner's key is known to it."""
    keys = workdir / "keys"
    keys.mkdir()
    _, server_secret_file = zmq.auth.create_certificates(workdir, "server")
    Path(server_secret_file).chmod(0o600)
    _, client_secret_file = zmq.auth.create_certificates(keys, owner.name)
    moved = workdir / "client.key_secret"  # only public keys stay in keys/
    Path(client_secret_file).rename(moved)
    moved.chmod(0o600)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    daemon = start_daemon(f"""
        [circus]
        endpoint = {endpoint}
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}
        curve_secret_key = {server_secret_file}
        curve_keys_dir = {keys}

        [watcher:w]
        cmd = sleep 300
        """)
    daemon.extra.update(endpoint=endpoint, client=moved, server=workdir / "server.key")
    return daemon


def test_curve_known_key_unknown_key_and_plain_client(curve_daemon, owner):
    daemon = curve_daemon
    endpoint = daemon.extra["endpoint"]
    client_keys = zmq.auth.load_certificate(daemon.extra["client"])
    stranger = zmq.curve_keypair()
    public = zmq.auth.load_certificate(daemon.extra["server"])[0]

    known = curve_request(endpoint, public, client_keys)
    assert known is not None and known["status"] == "ok"
    assert curve_request(endpoint, public, stranger, timeout=1.0) is None
    assert curve_request(endpoint, public, None, timeout=1.0) is None
    assert "curve key refused" in daemon.output()

    # The key acts as its user: the owner, who may not stop circusd.
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_publickey, sock.curve_secretkey = client_keys
    sock.curve_serverkey = public
    sock.connect(endpoint)
    sock.send(json.dumps({"command": "quit", "id": 2}).encode())
    assert sock.poll(3000)
    reply = json.loads(sock.recv())
    sock.close()
    assert reply["reason"].startswith("permission denied: 'quit'")
    assert f"uid={owner.uid} " in audit_lines(daemon.output())[-1]


def test_readonly_group_members_may_read_only(
    start_daemon, workdir, request_as, owner: ServiceUser, intruder: Intruder
):
    daemon = start_daemon(f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}
        readonly_group = {intruder.gid}

        [watcher:w]
        cmd = sleep 300

        [env:w]
        TOKEN = abc
        """)
    info = os.stat(workdir / "ctl.sock")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        owner.uid,
        intruder.gid,
        0o660,
    )
    assert request_as(intruder.name, daemon.endpoint, "status")["status"] == "ok"
    env = request_as(intruder.name, daemon.endpoint, "options", name="w")
    assert env["options"]["env"] == {"TOKEN": "(hidden)"}
    stop = request_as(intruder.name, daemon.endpoint, "stop", name="w")
    assert stop["reason"].startswith("permission denied: 'stop'")


def test_control_and_event_sockets_have_their_owner_and_mode_from_the_first_moment(
    start_daemon, workdir: Path, owner: ServiceUser, intruder: Intruder, request_as
):
    files = (workdir / "ctl.sock", workdir / "pub.sock")
    seen: dict[Path, list[tuple[int, int]]] = {path: [] for path in files}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for path in files:
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                seen[path].append((info.st_uid, stat.S_IMODE(info.st_mode)))
            time.sleep(0.001)

    poller = threading.Thread(target=poll)
    poller.start()
    old = os.umask(0)
    try:
        daemon = start_daemon(f"""
            [circus]
            endpoint = ipc://{files[0]}
            pubsub_endpoint = ipc://{files[1]}
            endpoint_owner = {owner.name}

            [socket:u1]
            path = {workdir}/app1.sock

            [socket:u2]
            path = {workdir}/app2.sock
            umask = 077

            [watcher:w]
            cmd = sleep 300
            use_sockets = True
            """)
    finally:
        os.umask(old)
        time.sleep(0.05)
        done.set()
        poller.join()
    for path, observed in seen.items():
        assert observed, f"the poller never saw {path}"
        assert all(uid == owner.uid for uid, _ in observed), (path, observed[:5])
        assert all(mode == 0o600 for _, mode in observed), (path, observed[:5])
    assert not os.stat(workdir / "app1.sock").st_mode & 0o002
    assert stat.S_IMODE(os.stat(workdir / "app2.sock").st_mode) == 0o700
    assert request_as(intruder.name, daemon.endpoint, "status") == (
        "CONNECT-ERROR EACCES"
    )
    assert request_as(owner.name, daemon.endpoint, "status")["status"] == "ok"


def test_control_socket_directory_others_can_write_is_refused(workdir: Path):
    import subprocess

    open_dir = workdir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    config = workdir / "c.ini"
    config.write_text(
        f"[circus]\nendpoint = ipc://{open_dir}/ctl.sock\n"
        f"pubsub_endpoint = ipc://{workdir}/pub.sock\n"
        "[watcher:w]\ncmd = sleep 300\n"
    )
    result = subprocess.run(
        [*CIRCUSD, str(config)], capture_output=True, text=True, timeout=20
    )
    assert result.returncode != 0
    assert "lets other users replace the socket" in result.stderr
    assert not (open_dir / "ctl.sock").exists()


def circusctl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "circusd.cli.circusctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_circusctl_speaks_curve_with_its_key_and_says_why_a_stranger_gets_no_answer(
    curve_daemon, workdir
):
    endpoint = curve_daemon.extra["endpoint"]
    server, client = curve_daemon.extra["server"], curve_daemon.extra["client"]
    base = ("--endpoint", endpoint, "--curve-server-key", str(server))

    done = circusctl(*base, "--curve-key", str(client), "status")
    assert done.returncode == 0, done.stderr
    assert "w" in done.stdout and "active" in done.stdout

    _, stranger = zmq.auth.create_certificates(workdir, "stranger")
    Path(stranger).chmod(0o600)
    done = circusctl(*base, "--curve-key", stranger, "--timeout", "1", "status")
    assert done.returncode == 1
    assert "curve_keys_dir" in done.stderr and len(done.stderr.splitlines()) == 1

    done = circusctl(*base, "status")
    assert done.returncode == 2 and "go together" in done.stderr
