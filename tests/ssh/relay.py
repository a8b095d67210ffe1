"""A ProxyCommand for tests: ``relay.py HOST PORT [LOG [WORD...]]`` connects
to HOST:PORT and copies stdin to the connection and the connection to
stdout, like ``nc HOST PORT``. Like nc it keeps the connection open after
the end of stdin, so it only ends when the server closes, or when it is
killed. With LOG it first appends one JSON line there: its pid and every
argument it was given (to check ProxyCommand's tokens and that the process
goes away)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading


def upstream(connection: socket.socket) -> None:
    while data := os.read(0, 65536):
        connection.sendall(data)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3:
        with open(sys.argv[3], "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}) + "\n")
    connection = socket.create_connection((host, port), timeout=10)
    connection.settimeout(None)
    threading.Thread(target=upstream, args=(connection,), daemon=True).start()
    while data := connection.recv(65536):
        while data:
            data = data[os.write(1, data) :]


if __name__ == "__main__":
    main()
