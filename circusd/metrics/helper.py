"""circusd-stats: the process that samples and publishes.

Started by the daemon (``circusd.metrics.service``), never by hand::

    python -m circusd.metrics.helper [--stats FD ENDPOINT] [--prometheus FD]
                                     [--socket NAME=FD]...

- stdin: snapshots from the daemon, one JSON line each
  (``circusd.metrics.snapshot``); end of file means the daemon is gone, and
  the helper exits.
- stderr: log lines ``LEVEL logger: message``, which the daemon writes
  into its own log.
- the listening sockets, already bound by the daemon: the stats endpoint
  (served with ZeroMQ's ZMQ_USE_FD), the Prometheus port, and the
  ``[socket:NAME]`` sockets whose waiting connections are counted.
- who may subscribe (``circusd.metrics.gate``): ``--owner-uid``,
  ``--readonly-gid`` and ``--insecure-tcp``, as in circusd's config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

import zmq.asyncio

from circusd.metrics.gate import StreamGate
from circusd.metrics.prometheus import MetricsPage, MetricsServer
from circusd.metrics.snapshot import Snapshot, decode
from circusd.metrics.stream import StatsStream
from circusd.stats import Sampler

log = logging.getLogger("circusd.metrics")

SNAPSHOT_LIMIT = 64 * 1024 * 1024  # bytes in one snapshot line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="circusd-stats")
    parser.add_argument("--stats", nargs=2, metavar=("FD", "ENDPOINT"))
    parser.add_argument("--prometheus", type=int, metavar="FD")
    parser.add_argument("--socket", action="append", default=[], metavar="NAME=FD")
    parser.add_argument("--owner-uid", type=int, metavar="UID")
    parser.add_argument("--readonly-gid", type=int, metavar="GID")
    parser.add_argument("--insecure-tcp", action="store_true")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


class Latest:
    """The last snapshot the daemon sent."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def __call__(self) -> Snapshot | None:
        return self.snapshot


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    sampler = Sampler()
    latest = Latest()
    context = zmq.asyncio.Context()
    sockets = {
        name: int(fd) for name, _, fd in (item.partition("=") for item in args.socket)
    }
    stream = None
    tasks = []
    gate = StreamGate(context, args.owner_uid, args.readonly_gid, args.insecure_tcp)
    tasks.append(asyncio.create_task(gate.serve()))
    if args.stats:
        fd, endpoint = args.stats
        stream = StatsStream(context, int(fd), endpoint, latest, sampler, sockets, gate)
        tasks.append(asyncio.create_task(stream.serve()))
        log.info("serving stats_endpoint=%s", endpoint)
    server = None
    if args.prometheus is not None:
        server = MetricsServer(args.prometheus, MetricsPage(latest, sampler))
        await server.start()
        log.info("serving prometheus metrics")
    reader = asyncio.StreamReader(limit=SNAPSHOT_LIMIT)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer
    )
    try:
        while line := await reader.readline():
            try:
                latest.snapshot = decode(line)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("bad snapshot from the daemon ignored: %s", exc)
                continue
            sampler.keep_only(
                {p.pid for w in latest.snapshot.watchers for p in w.processes}
                | {latest.snapshot.daemon_pid, os.getpid()}
            )
    finally:
        for task in tasks:
            task.cancel()
        if stream is not None:
            stream.close()
        if server is not None:
            server.close()
        gate.close()
        context.term()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(args.log_level.upper())
    # Ctrl-C in circusd's terminal reaches the whole group: the daemon stops,
    # then closes our stdin, which ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
