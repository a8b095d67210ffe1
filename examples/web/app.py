"""A tiny HTTP worker that serves on a listening socket it inherits.

circusd binds the socket once (``[socket:web]``) and starts several copies of
this program, each told the socket's fd number with ``--fd``. Every copy
accepts connections from the same socket, so requests spread over the
workers. Each answer names the worker that served it.

SIGTERM (circusd's stop signal) stops the worker once the request in hand, if
any, has been answered. Standard library only.
"""

from __future__ import annotations

import argparse
import http.server
import os
import selectors
import signal
import socket
import sys


def say(line: str) -> None:
    """One line on stderr (which circusd collects), in a single write."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "circusd-example"
    wid = "?"

    def do_GET(self) -> None:
        body = f"hello from worker wid={self.wid} pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        say(f"wid={self.wid} pid={os.getpid()} {format % args}")


def serve(listener: socket.socket, wid: str) -> None:
    Handler.wid = wid
    server = http.server.HTTPServer(
        listener.getsockname()[:2], Handler, bind_and_activate=False
    )
    server.socket = listener
    listener.setblocking(False)

    # SIGTERM only wakes the loop (through the wakeup fd); the loop decides
    # when to stop, so a request is never cut off halfway.
    wake_read, wake_write = socket.socketpair()
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while not stopping:
        for key, _ in selector.select():
            if key.fileobj is wake_read:
                wake_read.recv(64)
                continue
            try:
                conn, address = listener.accept()
            except BlockingIOError:
                continue  # another worker took this connection
            conn.settimeout(10)
            try:
                server.process_request(conn, address)
            except Exception:
                server.handle_error(conn, address)
                server.shutdown_request(conn)
    say(f"stopping wid={wid} pid={os.getpid()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="listening socket fd")
    parser.add_argument("--wid", default="?", help="worker id, for the answers")
    options = parser.parse_args()
    listener = socket.socket(fileno=options.fd)
    say(f"serving wid={options.wid} pid={os.getpid()} on {listener.getsockname()}")
    serve(listener, options.wid)


if __name__ == "__main__":
    main()
