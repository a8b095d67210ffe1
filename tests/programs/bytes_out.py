"""Case B18: bytes that are not all UTF-8. The whole payload goes to
stdout in one write; to stderr, cut inside the é at byte 1025 with a pause
longer than a held line is kept, so a text view must put the character
together across two reads. Then AFTER on both, and a wait."""

import os
import signal
import time

PAYLOAD = (
    b"\x88\xff\n"
    + b"a" * 1022
    + "é".encode()
    + b"\n"
    + "日本語\n".encode()
    + b"\x00tail\n"
)

os.write(1, PAYLOAD)
os.write(2, PAYLOAD[:1025])
time.sleep(1.5)
os.write(2, PAYLOAD[1025:])
os.write(1, b"AFTER\n")
os.write(2, b"AFTER\n")
while True:
    signal.pause()
