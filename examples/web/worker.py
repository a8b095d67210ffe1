"""A background job: every few seconds, write a heartbeat line to stdout.

Each line carries a sequence number and the host's load average, the kind of
small periodic check a real deployment runs beside its web workers. circusd
sends stdout to a file (see ``stdout_stream`` in circus.ini).

SIGTERM or SIGINT ends the job at once, between two beats.
"""

from __future__ import annotations

import argparse
import os
import signal
import time


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return f.read().split()[0]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds")
    options = parser.parse_args()

    # The stop signals are blocked and waited for, so the wait between two
    # beats ends the moment one arrives.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    sequence = 0
    while True:
        sequence += 1
        print(
            f"{now()} heartbeat seq={sequence} pid={os.getpid()} "
            f"loadavg={load_average()}",
            flush=True,
        )
        received = signal.sigtimedwait(stop_signals, options.interval)
        if received is not None:
            name = signal.Signals(received.si_signo).name
            print(f"{now()} stopping signal={name}", flush=True)
            return


if __name__ == "__main__":
    main()
