"""The kernel's tcp socket table as circusd reads it, with real sockets and a
real user: IPv4, IPv6 and IPv4-mapped IPv6 clients all appear, each client's
end with its owner's uid, from sock_diag and from the /proc fallback alike."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from circusd.control.tcp_diag import GREETING, _diag_table, _proc_table
from tests.conftest import ServiceUser
from tests.security.conftest import SYSTEM_PYTHON

pytestmark = pytest.mark.root

CLIENT = """
import socket, sys
held = []
for family, host, port in ((socket.AF_INET, '127.0.0.1', {v4}),
                           (socket.AF_INET6, '::1', {v6}),
                           (socket.AF_INET6, '::ffff:127.0.0.1', {mapped})):
    client = socket.socket(family)
    client.connect((host, port))
    client.sendall(bytes({greeting}))
    held.append(client)
print(' '.join(str(c.getsockname()[1]) for c in held), flush=True)
sys.stdin.read()
"""


def listener(family: int, host: str) -> socket.socket:
    server = socket.socket(family)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, host != "::")
    server.bind((host, 0))
    server.listen(8)
    server.settimeout(10)
    return server


@pytest.fixture
def three_clients(test_user: ServiceUser) -> Iterator[tuple[list[int], list[int]]]:
    """Connections of ``test_user`` to 127.0.0.1, to ::1 and, from an IPv6
    socket, to ::ffff:127.0.0.1: (their client ports, our listening ports)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to connect as another user")
    servers = [
        listener(socket.AF_INET, "127.0.0.1"),
        listener(socket.AF_INET6, "::1"),
        listener(socket.AF_INET6, "::"),  # dual stack: takes IPv4-mapped clients
    ]
    ports = [server.getsockname()[1] for server in servers]
    script = CLIENT.format(v4=ports[0], v6=ports[1], mapped=ports[2], greeting=GREETING)
    client = subprocess.Popen(
        ["runuser", "-u", test_user.name, "--", SYSTEM_PYTHON, "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    accepted = []
    try:
        assert client.stdout is not None
        client_ports = [int(port) for port in client.stdout.readline().split()]
        assert len(client_ports) == 3, "the client could not connect"
        accepted = [server.accept()[0] for server in servers]
        for conn in accepted:
            assert len(conn.recv(GREETING, socket.MSG_WAITALL)) == GREETING
        yield client_ports, ports
    finally:
        client.communicate(timeout=10)
        for sock in accepted + servers:
            sock.close()


LOOPBACK_V4 = socket.inet_aton("127.0.0.1")
LOOPBACK_V6 = socket.inet_pton(socket.AF_INET6, "::1")


def test_one_sock_diag_dump_holds_ipv4_ipv6_and_mapped_clients(
    three_clients, test_user: ServiceUser
):
    client_ports, ports = three_clients
    hosts = [LOOPBACK_V4, LOOPBACK_V6, LOOPBACK_V4]  # mapped reads as IPv4
    table = _diag_table()
    for host, client_port, port in zip(hosts, client_ports, ports, strict=True):
        client = [e for e in table if e.local == (host, client_port)]
        server = [e for e in table if e.remote == (host, client_port)]
        assert [(e.remote, e.uid, e.state) for e in client] == [
            ((host, port), test_user.uid, "01")
        ]
        assert [(e.local, e.uid, e.received) for e in server] == [
            ((host, port), 0, GREETING)
        ]
        assert client[0].inode and server[0].inode


def test_the_proc_fallback_reads_the_same_connections(three_clients):
    client_ports, server_ports = three_clients
    pairs = set(zip(client_ports, server_ports, strict=True))

    def ours(entries):  # (not another test's connection in time-wait)
        return sorted(
            (e.local, e.remote, e.state, e.uid, e.inode)
            for e in entries
            if {(e.local[1], e.remote[1]), (e.remote[1], e.local[1])} & pairs
        )

    assert len(ours(_diag_table())) == 6
    assert ours(_diag_table()) == ours(_proc_table())
