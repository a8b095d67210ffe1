"""Client side of circusd's control protocol (also spoken by Circus 0.19).

``CircusClient`` sends requests on the control endpoint, ``subscribe`` reads
the event stream. Both make their ZeroMQ sockets through a Connector:
``connect_socket`` connects directly; ``circusd.client.ssh.SSHSession``
carries the same connections over one SSH connection.
"""

from circusd.client.control import CircusClient
from circusd.client.endpoints import (
    DEFAULT_ENDPOINT,
    IPC_PATH_LIMIT,
    Connector,
    Endpoint,
    connect_socket,
    new_socket,
    parse_endpoint,
    probe,
)
from circusd.client.errors import (
    CallError,
    CallTimeout,
    DaemonUnreachable,
    InvalidEndpoint,
    ReplyError,
)
from circusd.client.events import Event, EventStream, subscribe

__all__ = [
    "DEFAULT_ENDPOINT",
    "IPC_PATH_LIMIT",
    "CallError",
    "CallTimeout",
    "CircusClient",
    "Connector",
    "DaemonUnreachable",
    "Endpoint",
    "Event",
    "EventStream",
    "InvalidEndpoint",
    "ReplyError",
    "connect_socket",
    "new_socket",
    "parse_endpoint",
    "probe",
    "subscribe",
]
