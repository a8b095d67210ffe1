#!/usr/bin/env python3
"""Time what ``circusctl --ssh HOST status`` does, step by step, against the
same requests made directly; for the `ssh` scenario (bench/scenarios.py).

Runs in a process of its own, with the circusd under test on its path
(PYTHONPATH), and with paramiko already imported: what it times is the SSH
login, then what circusctl's status command does after it, a ``status``
request and a ``list`` request for the one watcher, each on a fresh
SSHSession, ZeroMQ context and CircusClient, as in a new circusctl process.
Each tunnelled sample is followed by a direct one (the same steps through
circusd's default connector), so that drift in the machine's load falls on
both, and by a third login that times how long sshd takes after the login
before it answers anything (its set-up after authentication). Prints one
JSON object of samples, in milliseconds, and the reasons of samples that
failed (the daemon refused or did not answer) and were left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq

from circusd.client.control import CircusClient
from circusd.client.endpoints import Connector, Endpoint, connect_socket
from circusd.client.errors import CallError
from circusd.client.ssh import KeyRing, SSHOptions, SSHSession, parse_target

FIELDS = (
    "login_ms",  # SSHSession.open: TCP, key exchange, host key check, auth
    "channel_ms",  # the connector: channel open (+ local bridge, if any)
    "first_ms",  # first request, ZeroMQ handshake included, connector excluded
    "second_ms",  # a later request on the same connection
    "close_ms",  # CircusClient and SSHSession closed
    "cpu_ms",  # CPU time of this process (all threads), channel to second reply
    "direct_connect_ms",
    "direct_first_ms",
    "direct_second_ms",
    "direct_cpu_ms",
    "ready_ms",  # login to the answer of a first global request
    "round_trip_ms",  # a second global request
)


class Timed:
    """A Connector that remembers how long its last call took."""

    def __init__(self, connect: Connector) -> None:
        self.connect = connect
        self.seconds = 0.0

    def __call__(
        self, context: zmq.Context[Any], kind: int, endpoint: Endpoint, timeout: float
    ) -> zmq.Socket[Any]:
        started = time.perf_counter()
        try:
            return self.connect(context, kind, endpoint, timeout)
        finally:
            self.seconds = time.perf_counter() - started


def status_requests(
    endpoint: str, watcher: str, connect: Timed, path: str
) -> tuple[float, float, float, Callable[[], None]]:
    """(first request s, second s, CPU s, close): what `circusctl status` asks."""
    context: zmq.Context[Any] = zmq.Context()
    client = CircusClient(endpoint, 10.0, connect=connect, context=context)
    cpu = time.process_time()
    started = time.perf_counter()
    try:
        client.call("status")
        first = time.perf_counter()
        client.call("list", name=watcher)
    except CallError as exc:
        client.close()
        context.term()
        raise CallError(f"{path}: {exc}") from None
    second = time.perf_counter()
    cpu = time.process_time() - cpu

    def close() -> None:
        client.close()
        context.term()

    return first - started - connect.seconds, second - first, cpu, close


def tunnelled(args: argparse.Namespace, options: SSHOptions) -> dict[str, float]:
    session = SSHSession(parse_target(args.target), options)
    started = time.perf_counter()
    session.open()
    login = time.perf_counter() - started
    connect = Timed(session.connect_socket)
    try:
        first, second, cpu, close = status_requests(
            args.endpoint, args.watcher, connect, "tunnelled"
        )
    except BaseException:
        session.close()
        raise
    started = time.perf_counter()
    close()
    session.close()
    closing = time.perf_counter() - started
    return {
        "login_ms": login,
        "channel_ms": connect.seconds,
        "first_ms": first,
        "second_ms": second,
        "close_ms": closing,
        "cpu_ms": cpu,
    }


def direct(args: argparse.Namespace) -> dict[str, float]:
    connect = Timed(connect_socket)
    first, second, cpu, close = status_requests(
        args.direct_endpoint, args.watcher, connect, "direct"
    )
    close()
    return {
        "direct_connect_ms": connect.seconds,
        "direct_first_ms": first,
        "direct_second_ms": second,
        "direct_cpu_ms": cpu,
    }


def server_ready(args: argparse.Namespace, options: SSHOptions) -> dict[str, float]:
    """Two global requests right after the login: sshd answers the first
    only once it has set the session up, the second at once."""
    with SSHSession(parse_target(args.target), options) as session:
        session.open()
        transport = session._transports[-1]  # the bench looks inside
        started = time.perf_counter()
        transport.global_request("keepalive@openssh.com", wait=True)
        first = time.perf_counter()
        transport.global_request("keepalive@openssh.com", wait=True)
        second = time.perf_counter()
    return {"ready_ms": first - started, "round_trip_ms": second - first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh-config", required=True)
    parser.add_argument("--target", required=True, help="a Host of --ssh-config")
    parser.add_argument("--endpoint", required=True, help="as the server sees it")
    parser.add_argument("--direct-endpoint", help="default: --endpoint")
    parser.add_argument("--watcher", required=True)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    args.direct_endpoint = args.direct_endpoint or args.endpoint
    options = SSHOptions(timeout=10.0, config_file=args.ssh_config, keys=KeyRing())
    samples: dict[str, list[float]] = {field: [] for field in FIELDS}
    failures: list[str] = []
    for number in range(args.warmup + args.samples):
        try:
            figures = {**tunnelled(args, options), **direct(args)}
        except CallError as exc:
            failures.append(str(exc))
            continue
        figures.update(server_ready(args, options))
        if number >= args.warmup:
            for field, seconds in figures.items():
                samples[field].append(seconds * 1000)
    json.dump({"samples": samples, "failures": failures}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
