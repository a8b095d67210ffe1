"""Send a watchdog heartbeat ``PID;TIMESTAMP`` to 127.0.0.1:PORT every
INTERVAL seconds, forever: ``heartbeat.py PORT INTERVAL``."""

import os
import socket
import sys
import time

port, interval = int(sys.argv[1]), float(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    while True:
        sock.sendto(f"{os.getpid()};{time.time()}".encode(), ("127.0.0.1", port))
        time.sleep(interval)
