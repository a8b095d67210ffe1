"""Hostile HTTP clients, standard library only, to run as another user
(``runuser`` with the system's python3).

    http_hostile.py reset HOST PORT COUNT
        COUNT connections that send half a request line, then reset;
    http_hostile.py hold HOST PORT COUNT SECONDS
        COUNT connections that send half a request and hold it for SECONDS
        (a slow client, or slowloris), then print ``held N``.
"""

import socket
import struct
import sys
import time


def main() -> None:
    mode, host, port, count = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    held = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /metr")
        if mode == "reset":
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()
        else:
            held.append(sock)
    if mode == "hold":
        time.sleep(float(sys.argv[5]))
        print(f"held {len(held)}", flush=True)


if __name__ == "__main__":
    main()
