#!/usr/bin/env python3
"""The floor: the least a Python supervisor could do, for the benchmark.

Usage: floor.py SPEC.json, where SPEC is {"endpoint": "ipc://...",
"programs": [{"argv": [...], "processes": N}, ...]}.

It Popens every process in a loop; one thread blocks in os.wait() and
Popens a replacement for each child that ends; the main thread answers every
request on a bare ZeroMQ ROUTER with {"status": "ok"} and the request's id.
SIGTERM sends SIGTERM to every child, waits for all of them, and exits 0.
No config checks, no logging, no events, no state: whatever a real daemon
does on top of this is its own cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import zmq


class Children:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.running: dict[int, tuple[str, ...]] = {}
        self.stopping = False

    def spawn(self, argv: tuple[str, ...]) -> None:
        process = subprocess.Popen(argv)
        process.returncode = 0  # reaped by reap(), never by the Popen object
        self.running[process.pid] = argv

    def reap(self) -> None:
        """Wait for any child to end; replace it unless stopping."""
        while True:
            try:
                pid, _status = os.wait()
            except ChildProcessError:
                with self.lock:
                    self.lock.wait()
                continue
            with self.lock:
                argv = self.running.pop(pid, None)
                if argv is not None and not self.stopping:
                    self.spawn(argv)
                self.lock.notify_all()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for pid in list(self.running):
                os.kill(pid, signal.SIGTERM)
            while self.running:
                self.lock.wait()


def serve(endpoint: str, wakeup: int) -> None:
    """Answer requests until `wakeup` is readable (a signal arrived)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(wakeup, zmq.POLLIN)
    try:
        while True:
            ready = dict(poller.poll())
            if wakeup in ready:
                return
            identity, body = router.recv_multipart()
            request: dict[str, Any] = json.loads(body)
            reply = {"id": request.get("id"), "status": "ok"}
            router.send_multipart([identity, json.dumps(reply).encode()])
    finally:
        router.close()
        context.term()


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    children = Children()
    # SIGTERM may land on any thread; the wakeup fd tells the main loop.
    wakeup, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    with children.lock:
        for program in spec["programs"]:
            for _ in range(program["processes"]):
                children.spawn(tuple(program["argv"]))
        children.lock.notify_all()
    threading.Thread(target=children.reap, daemon=True).start()
    serve(spec["endpoint"], wakeup)
    children.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
