"""Double-fork N grandchildren that exit at once, the middle process first."""

import os
import sys
import time

count = int(sys.argv[1])
for _ in range(count):
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            time.sleep(0.01)  # let the middle process exit first
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
with open(sys.argv[2], "w") as handle:
    handle.write("done")
time.sleep(600)
