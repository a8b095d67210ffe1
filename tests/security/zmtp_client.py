"""One control request over ZMTP 3.0 (NULL), standard library only.

Run as another user (``runuser -u USER -- /usr/bin/python3 zmtp_client.py
ENDPOINT JSON``) where the test's own interpreter and pyzmq are out of that
user's reach. Prints the reply, or ``CONNECT-ERROR <errno name>`` when the
socket cannot even be reached (a file mode refusing the connection).
"""

import errno
import json
import socket
import struct
import sys


def frame(body: bytes, command: bool = False) -> bytes:
    flags = 0x04 if command else 0x00
    if len(body) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    flags = read_exactly(sock, 1)[0]
    if flags & 0x02:
        size = struct.unpack(">Q", read_exactly(sock, 8))[0]
    else:
        size = read_exactly(sock, 1)[0]
    return flags, read_exactly(sock, size)


def connect(endpoint: str) -> socket.socket:
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(endpoint[len("ipc://") :])
        return sock
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)


def main() -> None:
    endpoint, request = sys.argv[1], sys.argv[2]
    try:
        sock = connect(endpoint)
    except OSError as exc:
        print(f"CONNECT-ERROR {errno.errorcode.get(exc.errno or 0, exc)}")
        return
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0])
    greeting += b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)
    sock.sendall(greeting)
    read_exactly(sock, 64)
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    sock.sendall(frame(ready, command=True))
    flags, body = read_frame(sock)  # the server's READY, once it let us in
    if not flags & 0x04 or not body.startswith(b"\x05READY"):
        print(f"HANDSHAKE-ERROR {body!r}")
        return
    sock.sendall(frame(json.dumps(json.loads(request)).encode()))
    while True:
        flags, body = read_frame(sock)
        if not flags & 0x04:
            print(body.decode())
            return


if __name__ == "__main__":
    main()
