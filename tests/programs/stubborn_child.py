"""A parent that exits at once on SIGINT, and a child that ignores INT and TERM."""

import os
import signal
import sys
import time

marker = sys.argv[1]
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    while True:
        time.sleep(60)
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
while True:
    time.sleep(60)
