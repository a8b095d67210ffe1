"""What identifying a new loopback tcp caller costs circusd.

    .venv/bin/python bench/tcp_callers.py [--connections 300] [--rounds 3]

A real ROUTER socket on loopback tcp, with ZAP answered as circusd's control
socket answers it (``circusd.control.auth.TcpPeers``: the monitor's report
of the accepted connection is read and its owner looked up, the ZAP request
gets a ticket, the first message redeems it). Each connection is a fresh
DEALER that sends one message. Timed per connection: the work circusd does
for it on those three steps, nothing else (the handshake's round trips and
libzmq's own work are the same with or without identification).

Then what it adds to a request: a server process answers each new
connection's one request, with identification as above or with none (ZAP
answered at once, no monitor), alternately; the client times connect to
reply, and the difference of the medians is what identifying added.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import zmq

from circusd.control.auth import ZAP_ENDPOINT, TcpPeers

Server = tuple[zmq.Context[Any], zmq.Socket[Any], zmq.Socket[Any], TcpPeers, int]


def server(identify: bool) -> Server:
    """A ROUTER on loopback tcp whose ZAP requests come to ``zap``, with its
    connections followed by ``peers`` if ``identify``: context, zap,
    router, peers, port."""
    context = zmq.Context()
    zap = context.socket(zmq.REP)
    zap.bind(ZAP_ENDPOINT)
    router = context.socket(zmq.ROUTER)
    router.zap_domain = b"bench"
    peers = TcpPeers(tickets=True)
    if identify:
        peers.watch(router)
    router.bind("tcp://127.0.0.1:0")
    port = int(router.last_endpoint.decode().rsplit(":", 1)[1])
    peers.listen(socket.inet_aton("127.0.0.1"), port)
    return context, zap, router, peers, port


def one_round(connections: int) -> list[float]:
    context, zap, router, peers, port = server(identify=True)
    (reports,) = peers.reports()
    samples = []
    try:
        for _ in range(connections):
            dealer = context.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(b"status")
            assert reports.poll(5000), "no report of the connection"
            start = time.perf_counter()
            peers.update()
            spent = time.perf_counter() - start
            assert zap.poll(5000), "no ZAP request"
            request = zap.recv_multipart()
            start = time.perf_counter()
            ticket = peers.ticket(request[3].decode())
            spent += time.perf_counter() - start
            zap.send_multipart([b"1.0", request[1], b"200", b"OK", b"%d" % ticket, b""])
            assert router.poll(5000), "no message"
            frame = router.recv_multipart(copy=False)[-1]
            start = time.perf_counter()
            caller = peers.redeem(ticket, frame.get(zmq.SRCFD), insecure=False)
            spent += time.perf_counter() - start
            assert caller.uid == os.geteuid(), caller
            samples.append(spent)
            dealer.close()
    finally:
        peers.close()
        context.destroy(linger=0)
    return samples


def serve(identify: bool) -> None:
    """Answer one request per connection until stdin closes; print the port."""
    context, zap, router, peers, port = server(identify)
    poller = zmq.Poller()
    for sock in (zap, router, *peers.reports()):
        poller.register(sock, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    print(port, flush=True)
    while True:
        ready = dict(poller.poll())
        if sys.stdin.fileno() in ready:
            break
        peers.update()
        if zap in ready:
            request = zap.recv_multipart()
            user = peers.ticket(request[3].decode()) if identify else 0
            zap.send_multipart([b"1.0", request[1], b"200", b"OK", b"%d" % user, b""])
        if router in ready:
            frames = router.recv_multipart(copy=False)
            if identify:
                user = int(frames[-1].get("User-Id"))
                caller = peers.redeem(user, frames[-1].get(zmq.SRCFD), False)
                assert caller.uid == os.geteuid(), caller
            router.send_multipart([frames[0].bytes, b"ok"])
    peers.close()
    context.destroy(linger=0)


def added_latency(connections: int) -> tuple[float, float]:
    """Median connect-to-reply time (ms) of a new connection's first
    request, with identification and without."""
    servers, ports = {}, {}
    for identify in (True, False):
        servers[identify] = subprocess.Popen(
            [sys.executable, __file__, "--serve", "on" if identify else "off"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert servers[identify].stdout is not None
        ports[identify] = int(servers[identify].stdout.readline())
    context = zmq.Context()
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(connections):
            for identify in (True, False):
                start = time.perf_counter()
                dealer = context.socket(zmq.DEALER)
                dealer.linger = 0
                dealer.connect(f"tcp://127.0.0.1:{ports[identify]}")
                dealer.send(b"status")
                assert dealer.poll(5000), "no reply"
                dealer.recv()
                times[identify].append(time.perf_counter() - start)
                dealer.close()
    finally:
        context.destroy(linger=0)
        for server in servers.values():
            server.communicate(timeout=10)
    return statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve == "on")
        return
    for number in range(1, args.rounds + 1):
        samples = sorted(one_round(args.connections))
        median = statistics.median(samples) * 1e3
        p90 = samples[int(len(samples) * 0.9)] * 1e3
        print(
            f"round {number}: {len(samples)} new connections, identifying each "
            f"took median {median:.3f} ms, p90 {p90:.3f} ms"
        )
        identified, plain = added_latency(args.connections)
        print(
            f"round {number}: connect to reply, {args.connections} new connections "
            f"each: {identified:.3f} ms identified, {plain:.3f} ms not, "
            f"added {identified - plain:+.3f} ms (medians)"
        )


if __name__ == "__main__":
    main()
