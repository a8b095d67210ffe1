"""What circusctl --ssh refuses, and how: unknown and changed host keys
(B29), wrong keys, unreachable and silent hosts, and remote users that may
not open the daemon's socket. Each fails within the timeout, with one line
on stderr and a non-zero exit, before any request reaches the daemon."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.ssh.conftest import Client, LoginUser, SSHServer, keygen

pytestmark = pytest.mark.timeout(60)

SLEEPER = "[watcher:sleeper]\ncmd = sleep 600\n"
TIMEOUT = 3.0


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text


def assert_no_request(daemon: Daemon, log_before: str) -> None:
    assert daemon.output() == log_before, "the daemon logged something"


def test_an_unknown_host_key_is_refused_before_anything_is_sent(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    client.known_hosts.write_text("")
    log_before = daemon.output()

    result = client.ssh("--endpoint", daemon.endpoint, "--timeout", "3", "status")

    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"unknown host key for [127.0.0.1]:{sshd.port}" in line
    assert "SHA256:" in line and "ssh-keyscan -p" in line and "--ssh-accept-new" in line
    assert result.stdout == ""
    assert_no_request(daemon, log_before)


def test_a_changed_host_key_is_refused_as_a_mismatch(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(SLEEPER)
    impostor = keygen(tmp_path / "impostor")
    client.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    log_before = daemon.output()

    result = client.ssh("--endpoint", daemon.endpoint, "status")

    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"host key mismatch for [127.0.0.1]:{sshd.port}" in line
    assert f"{client.known_hosts}:1" in line and "ssh-keygen -R" in line
    assert_no_request(daemon, log_before)


def test_accept_new_adds_an_unknown_key_and_then_trusts_it(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    client.known_hosts.unlink()

    first = client.ssh("--ssh-accept-new", "--endpoint", daemon.endpoint, "list")
    second = client.ssh("--endpoint", daemon.endpoint, "list")

    assert (first.returncode, first.stdout) == (0, "sleeper\n")
    assert "added host key for" in one_line(first.stderr)
    assert client.known_hosts.read_text() == sshd.known_hosts_line
    assert (second.returncode, second.stdout, second.stderr) == (0, "sleeper\n", "")


def test_accept_new_never_accepts_a_changed_key(
    client: Client, sshd: SSHServer, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "impostor")
    client.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")

    result = client.ssh("--ssh-accept-new", "--endpoint", "ipc:///x.sock", "list")

    assert result.returncode == 1
    assert "host key mismatch" in one_line(result.stderr)
    assert sshd.host_public not in client.known_hosts.read_text()


def test_a_hashed_known_hosts_entry_is_recognised(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    import paramiko

    daemon = start_daemon(SLEEPER)
    hashed = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{sshd.port}")
    client.known_hosts.write_text(f"{hashed} {sshd.host_public}\n")

    result = client.ssh("--endpoint", daemon.endpoint, "list")

    assert (result.returncode, result.stderr) == (0, "")


def test_a_wrong_key_fails_with_authentication_failed(
    client: Client, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(SLEEPER)
    keygen(tmp_path / "stranger")
    log_before = daemon.output()

    result = client.ssh(
        "--endpoint", daemon.endpoint, "--timeout", str(TIMEOUT), "status",
        key=tmp_path / "stranger",
    )  # fmt: skip

    assert result.returncode == 1
    assert "Authentication failed for root@127.0.0.1" in one_line(result.stderr)
    assert str(tmp_path / "stranger") in result.stderr
    assert result.elapsed < TIMEOUT + 2
    assert_no_request(daemon, log_before)


def test_a_key_without_forwarding_rights_is_refused_clearly(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(SLEEPER)
    key = tmp_path / "restricted"
    sshd.authorize("root", "restrict " + keygen(key))

    result = client.ssh("--endpoint", daemon.endpoint, "status", key=key)

    assert result.returncode == 1
    assert "sshd does not allow forwarding to unix sockets for root" in one_line(
        result.stderr
    )


def test_a_missing_key_file_is_named(client: Client, tmp_path: Path) -> None:
    result = client.ssh("status", key=tmp_path / "absent")

    assert result.returncode == 1
    assert f"cannot read key file {tmp_path}/absent" in one_line(result.stderr)


def test_a_closed_port_fails_at_once(
    client: Client, free_tcp_port: Callable[[], int]
) -> None:
    port = free_tcp_port()

    result = client.run(
        "--ssh", f"root@127.0.0.1:{port}", "--ssh-keyfile", str(client.key),
        "--timeout", str(TIMEOUT), "status",
    )  # fmt: skip

    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in one_line(
        result.stderr
    )
    assert result.elapsed < TIMEOUT


def test_a_silent_host_fails_within_the_timeout(
    client: Client, silent_host: int
) -> None:
    result = client.run(
        "--ssh", f"root@127.0.0.1:{silent_host}", "--ssh-keyfile", str(client.key),
        "--timeout", str(TIMEOUT), "status",
    )  # fmt: skip

    assert result.returncode == 1
    assert f"127.0.0.1:{silent_host}" in one_line(result.stderr)
    assert "no SSH handshake within 3 s" in result.stderr
    assert TIMEOUT - 0.5 < result.elapsed < TIMEOUT + 2


# -- a remote user other than root -------------------------------------------


def test_a_user_that_may_not_open_the_socket_is_refused_clearly(
    client: Client, login_user: LoginUser, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    socket_path = f"{daemon.directory}/ctl.sock"
    assert os.stat(socket_path).st_mode & 0o077 == 0  # circusd's 0700 socket

    result = client.ssh(
        "--endpoint",
        daemon.endpoint,
        "status",
        user=login_user.name,
        key=login_user.key,
    )

    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"could not connect to {socket_path} as {login_user.name}" in line
    assert f"{login_user.name} may not open it" in line


def test_the_remote_policy_judges_the_ssh_login_user(
    client: Client, login_user: LoginUser, start_daemon: Callable[..., Daemon]
) -> None:
    """A member of readonly_group may read through the tunnel and is refused
    anything else; the audit log names the login user's uid."""
    daemon = start_daemon(
        "[circus]\nendpoint = ipc://{dir}/ctl.sock\n"
        "pubsub_endpoint = ipc://{dir}/pub.sock\n"
        f"readonly_group = {login_user.name}\n\n{SLEEPER}"
    )
    user, key = login_user.name, login_user.key

    read = client.ssh("--endpoint", daemon.endpoint, "list", user=user, key=key)
    change = client.ssh(
        "--endpoint", daemon.endpoint, "stop", "sleeper", user=user, key=key
    )

    assert (read.returncode, read.stdout, read.stderr) == (0, "sleeper\n", "")
    assert change.returncode == 3
    assert one_line(change.stderr).startswith("circusctl: error: ")
    refusals = [
        line for line in daemon.output().splitlines() if "refused command=stop" in line
    ]
    assert len(refusals) == 1 and f"uid={login_user.uid} " in refusals[0]
    assert daemon.call("status", name="sleeper")["status"] == "active"


def test_the_daemon_sees_the_ssh_login_user_as_the_caller(
    client: Client, login_user: LoginUser, workdir: Path
) -> None:
    """Through the tunnel, the peer of the daemon's socket is the login user."""
    path = workdir / "peer.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen(1)
        listener.settimeout(30)
        tunnelled = client.popen(
            "--ssh", client.target(login_user.name),
            "--ssh-keyfile", str(login_user.key),
            "--endpoint", f"ipc://{path}", "--timeout", "5", "status",
        )  # fmt: skip
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            raise AssertionError(tunnelled.communicate(timeout=30)) from None
        with connection:
            raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        tunnelled.kill()  # it would wait for a reply that never comes
        tunnelled.communicate(timeout=30)
    uid = int.from_bytes(raw[4:8], "little")

    assert uid == login_user.uid


def test_a_tunnel_opens_no_local_tcp_listener(
    client: Client, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    before = tcp_listeners()
    listener = client.popen(
        "--ssh", client.target(), "--ssh-keyfile", str(client.key),
        "--endpoint", daemon.endpoint, "listen",
    )  # fmt: skip
    try:
        assert listener.stderr is not None
        assert "listening on" in listener.stderr.readline()
        owned = socket_inodes(listener.pid)
        during = tcp_listeners()
        unix_listening = unix_listeners(owned)
    finally:
        listener.terminate()
        listener.communicate(timeout=10)

    assert owned, "the client holds no sockets at all?"
    assert not (set(during) & owned), "the client listens on TCP"
    assert {inode for inode in during if inode not in before} & owned == set()
    # The bridge's own listener is closed once ZeroMQ's connection is in.
    assert unix_listening == [], f"the client listens on {unix_listening}"


def tcp_listeners() -> dict[int, str]:
    """inode -> local address of every listening TCP socket (v4 and v6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = fields[1]
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def unix_listeners(inodes: set[int]) -> list[str]:
    """Names of the listening unix sockets among ``inodes``."""
    found = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        listening = int(fields[3], 16) & 0x10000  # __SO_ACCEPTCON
        if listening and int(fields[6]) in inodes:
            found.append(fields[7] if len(fields) > 7 else "(unnamed)")
    return found


def test_another_process_cannot_use_the_bridge(tmp_path: Path) -> None:
    """The bridge's listener accepts only a connection from its own process."""
    import subprocess
    import sys

    from circusd.client.ssh.bridge import _accept_own

    name = f"circusctl-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("\0" + name)
        listener.listen(4)
        intruder = subprocess.Popen(
            [sys.executable, "-c", INTRUDER, name], stdout=subprocess.PIPE, text=True
        )
        assert intruder.stdout is not None
        assert intruder.stdout.readline() == "connected\n"
        with socket.socket(socket.AF_UNIX) as own:
            own.connect("\0" + name)
            accepted = _accept_own(listener, time.monotonic() + 5, "test")
            accepted.sendall(b"x")
            assert own.recv(1) == b"x"
            accepted.close()
        out, _ = intruder.communicate(timeout=10)

    assert out == "closed unread\n"


INTRUDER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("\\0" + sys.argv[1])
print("connected", flush=True)
s.settimeout(10)
try:
    data = s.recv(10)
except ConnectionResetError:
    data = b""
print("closed unread" if data == b"" else f"got {data!r}", flush=True)
"""


def test_the_killed_clients_are_not_counted_as_leftovers_here(
    sshd: SSHServer,
) -> None:
    """Earlier tests leave no sshd session behind (each client has ended)."""
    wait_for(lambda: sshd.connections() == [], timeout=10, what="no sshd sessions")
