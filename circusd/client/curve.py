"""CURVE for the client: reaching a daemon's tcp endpoint beyond loopback.

The daemon proves itself with its public key (``curve_secret_key`` on its
side); the client proves who it is with its own key pair, whose public half
the daemon's operator put in ``curve_keys_dir`` under a user's name. Key
files are ZeroMQ certificates (``zmq.auth.create_certificates`` writes them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth

from circusd.client.endpoints import Connector, Endpoint, connect_socket
from circusd.client.errors import CallError, InvalidEndpoint

# Said after a timeout: a CURVE handshake that fails is silent on the wire.
HINT = (
    "with CURVE, also check that --curve-server-key is the daemon's public "
    "key and that your public key is in its curve_keys_dir"
)


@dataclass(frozen=True)
class CurveKeys:
    server_public: bytes
    public: bytes
    secret: bytes


def load_keys(server_key: str, client_key: str) -> CurveKeys:
    """Read both certificates; one-line errors name the file and the problem."""
    server_public, _ = _certificate(server_key, "--curve-server-key")
    public, secret = _certificate(client_key, "--curve-key")
    if not secret:
        raise CallError(f"--curve-key {client_key} holds no secret-key")
    if os.stat(client_key).st_mode & 0o077:
        raise CallError(
            f"--curve-key {client_key} is readable by other users; chmod 600 it"
        )
    return CurveKeys(server_public, public, secret)


def _certificate(path: str, option: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise CallError(f"{option} {path}: {detail}") from None


def connector(keys: CurveKeys) -> Connector:
    """A Connector that speaks CURVE with ``keys``; tcp endpoints only."""

    def with_keys(sock: zmq.Socket[Any]) -> None:
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.public
        sock.curve_secretkey = keys.secret

    def connect(
        context: zmq.Context[Any], kind: int, endpoint: Endpoint, timeout: float
    ) -> zmq.Socket[Any]:
        if not endpoint.address.startswith("tcp://"):
            raise InvalidEndpoint(f"CURVE needs a tcp endpoint, not {endpoint.address}")
        return connect_socket(context, kind, endpoint, timeout, prepare=with_keys)

    return connect
