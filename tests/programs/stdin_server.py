"""Accept one connection on the listening socket given as stdin; greet it."""

import socket

listener = socket.socket(fileno=0)
connection, _ = listener.accept()
connection.sendall(b"hi")
print("this line goes to /dev/null", flush=True)
