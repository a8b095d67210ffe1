"""A watcher for the tests: answer each connection on the listening socket
whose fd is argv[1] with this process's pid, then close the connection."""

import os
import socket
import sys

server = socket.socket(fileno=int(sys.argv[1]))
server.setblocking(True)
while True:
    connection, _ = server.accept()
    with connection:
        connection.sendall(f"{os.getpid()}\n".encode())
