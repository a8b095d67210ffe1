"""The bridge's copying from the server, with a local reader that lags or
goes away.

paramiko's thread writes what the local socket takes at once and queues the
rest for the downstream thread, which writes it later; the bytes must come
out in the order the server sent them, whichever path each one took. On a
paramiko outside PARAMIKO_TESTED only the thread writes (ThreadOnly).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from circusd.client.ssh.bridge import Pump
from circusd.client.ssh.transport import TunnelTransport
from tests.conftest import wait_for
from tests.ssh.conftest import SSHServer

PATTERN = b"".join(number.to_bytes(4, "big") for number in range(2**21))  # 8 MiB


class ThreadOnly(TunnelTransport):
    """A TunnelTransport as on an untested paramiko: data waits in the channel."""

    _channel_handler_table = paramiko.Transport._channel_handler_table


def serve(path: Path, handle: Callable[[socket.socket], None]) -> threading.Thread:
    """A unix socket at ``path`` whose first client is given to ``handle``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(30)

    def run() -> None:
        with listener:
            connection, _ = listener.accept()
            connection.settimeout(30)
            with connection:
                handle(connection)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def serve_once(path: Path, data: bytes) -> threading.Thread:
    """A unix socket at ``path`` that writes ``data`` to its first client."""
    return serve(path, lambda connection: connection.sendall(data))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [TunnelTransport, ThreadOnly])
def test_bytes_from_the_server_stay_in_order_when_the_reader_lags(
    sshd: SSHServer, root_key: Path, tmp_path: Path, kind: type[TunnelTransport]
) -> None:
    path = tmp_path / "source.sock"
    server = serve_once(path, PATTERN)
    transport = kind(socket.create_connection(("127.0.0.1", sshd.port)))
    local, reader = socket.socketpair()
    pump = Pump("test")
    try:
        # Host keys are checked by SSHSession; here only the copying matters.
        transport.start_client(timeout=10)
        key = paramiko.Ed25519Key.from_private_key_file(str(root_key))
        transport.auth_publickey("root", key)
        channel = transport.open_unix_channel(str(path), 10)
        deadline = time.monotonic() + 10
        while not channel.recv_ready():  # some data waits before the pump starts
            assert time.monotonic() < deadline, "no data from the server"
            time.sleep(0.001)
        pump.connect(channel, local, transport)

        received = bytearray()
        reader.settimeout(30)
        while chunk := reader.recv(65536):
            received += chunk
            if len(received) // 65536 % 4 == 0:
                time.sleep(0.002)  # the socket fills; later data is queued
        assert len(received) == len(PATTERN)
        assert bytes(received) == PATTERN
    finally:
        pump.close()
        reader.close()
        transport.close()
        server.join(10)


def serve_until_closed(path: Path) -> threading.Thread:
    """A unix socket at ``path`` that writes to its first client until the
    connection is closed, whatever the client sends (or stops sending)."""

    def flood(connection: socket.socket) -> None:
        try:
            while True:
                connection.sendall(PATTERN[:65536])
        except OSError:
            pass

    return serve(path, flood)


@pytest.mark.timeout(60)
def test_a_local_reader_that_closes_while_data_flows_is_no_broken_tunnel(
    sshd: SSHServer, root_key: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What circusctl does at exit: ZeroMQ's socket closes first, while the
    server still sends; the tunnel then ends without an error or warning."""
    caplog.set_level(logging.WARNING, logger="circusd.client.ssh")
    path = tmp_path / "source.sock"
    server = serve_until_closed(path)
    transport = TunnelTransport(socket.create_connection(("127.0.0.1", sshd.port)))
    local, reader = socket.socketpair()
    pump = Pump("test")
    try:
        transport.start_client(timeout=10)
        key = paramiko.Ed25519Key.from_private_key_file(str(root_key))
        transport.auth_publickey("root", key)
        channel = transport.open_unix_channel(str(path), 10)
        pump.connect(channel, local, transport)
        reader.settimeout(10)
        assert reader.recv(65536), "no data from the server"

        reader.close()  # as ZeroMQ's socket closes
        wait_for(lambda: channel.closed, what="the tunnel to end")

        assert pump.error is None
        assert [r.message for r in caplog.records] == []
    finally:
        pump.close()
        transport.close()
        server.join(10)
