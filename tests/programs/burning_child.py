"""Start a child that burns CPU, write its pid to argv[1], then sleep.

The parent stays idle and alive whatever happens to the child."""

import os
import subprocess
import sys
import time

child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{child.pid}\n")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
child.wait()
time.sleep(300)
