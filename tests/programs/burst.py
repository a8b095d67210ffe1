"""Case B16: 200 KiB of a known pattern and END, written in one loop; on
SIGTERM, 300 KiB more and BYE, then exit. ``burst.py MARKER`` creates
MARKER once everything before the signal is written."""

import os
import signal
import sys

PATTERN = bytes(range(256)) * 800  # 200 KiB
TAIL = b"t" * 300 * 1024


def write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def stopped(*_: object) -> None:
    write(TAIL + b"BYE\n")
    os._exit(0)


signal.signal(signal.SIGTERM, stopped)
write(PATTERN + b"END\n")
with open(sys.argv[1], "w"):
    pass
while True:
    signal.pause()
