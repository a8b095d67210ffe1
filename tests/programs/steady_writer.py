"""Numbered 210-byte lines on stdout, about 1000 a second, for ever.
``steady_writer.py BEAT`` writes the latest number to BEAT every 50 lines,
so a test can see the writer going on (or blocked)."""

import os
import sys
import time

beat = sys.argv[1]
number = 0
while True:
    number += 1
    os.write(1, b"%08d %s\n" % (number, b"." * 200))
    if number % 50 == 0:
        with open(beat + ".tmp", "w") as handle:
            handle.write(str(number))
        os.replace(beat + ".tmp", beat)
    time.sleep(0.001)
