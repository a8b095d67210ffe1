"""Event delivery: latency and throughput of the event stream.

    .venv/bin/python bench/events_delivery.py [--processes 1000] [--rounds 3]
                                              [--python OTHER/.venv/bin/python]

A fresh circusd (the one ``--python`` imports: this tree's by default, so
another checkout's venv compares two versions) with one ``sleep`` watcher and its event
stream on loopback tcp; one subscriber to ``watcher.`` connects, then
``incr`` and ``decr`` by ``--processes`` make a few thousand events (spawn,
kill, reap). Latency is the arrival time less the event's own ``time``
field; throughput is events over the span from the first to the last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(endpoint: str, command: str, **props: object) -> dict[str, object]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_json({"id": "1", "command": command, "properties": props})
    if not sock.poll(60_000):
        raise TimeoutError(command)
    reply = dict(sock.recv_json())
    sock.close()
    return reply


def one_round(processes: int, python: str) -> tuple[int, list[float], float]:
    with tempfile.TemporaryDirectory(prefix="evb") as directory:
        port = free_port()
        control = f"ipc://{directory}/ctl.sock"
        config = Path(directory) / "circus.ini"
        config.write_text(
            f"[circus]\nendpoint = {control}\n"
            f"pubsub_endpoint = tcp://127.0.0.1:{port}\n\n"
            "[watcher:w]\ncmd = sleep 600\nnumprocesses = 1\n"
        )
        daemon = subprocess.Popen(
            [python, "-m", "circusd.cli.daemon", str(config)],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    call(control, "status")
                    break
                except (TimeoutError, zmq.ZMQError):
                    time.sleep(0.1)
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.linger = 0
            sub.rcvhwm = 0
            sub.setsockopt(zmq.SUBSCRIBE, b"watcher.")
            sub.connect(f"tcp://127.0.0.1:{port}")
            time.sleep(0.5)  # the subscription reaches circusd
            latencies: list[float] = []
            span = [0.0, 0.0]

            def receive() -> None:
                while sub.poll(3000):
                    _, body = sub.recv_multipart()
                    now = time.time()
                    sent = json.loads(body).get("time")
                    if isinstance(sent, (int, float)):
                        latencies.append(now - sent)
                    span[0] = span[0] or now
                    span[1] = now

            reader = threading.Thread(target=receive)
            reader.start()
            call(control, "incr", name="w", nb=processes)
            call(control, "decr", name="w", nb=processes)
            reader.join()
            sub.close()
            return len(latencies), latencies, span[1] - span[0]
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=sys.executable, help="whose circusd")
    args = parser.parse_args()
    pooled: list[float] = []
    for _ in range(args.rounds):
        count, latencies, span = one_round(args.processes, args.python)
        pooled += latencies
        print(f"round: {count} events in {span:.2f} s ({count / span:.0f}/s)")
    pooled.sort()
    p50 = statistics.median(pooled) * 1000
    p99 = pooled[int(len(pooled) * 0.99)] * 1000
    print(
        f"latency over {len(pooled)} events: median {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {pooled[-1] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
