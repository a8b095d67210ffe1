"""The restart policy: when to respawn a process that exited, and when to stop.

Pure logic on timestamps, so it is tested on a fake clock.

A process that stayed up for STABLE_AFTER seconds is healthy: its exit is
answered by an immediate respawn and forgets earlier failures. A process that
dies younger, or fails to start at all, is a failure: the first is retried at
once, the following ones after a delay that doubles from FIRST_DELAY up to
MAX_DELAY. After ``max_retry`` failures in a row the watcher gives up and is
marked failed (``max_retry = -1`` retries forever, still with the delay).
"""

from __future__ import annotations

from dataclasses import dataclass

STABLE_AFTER = 5.0
FIRST_DELAY = 0.25
MAX_DELAY = 30.0


@dataclass
class RestartPolicy:
    max_retry: int
    failures: int = 0

    def record_exit(self, uptime: float | None) -> float | None:
        """Account for one exit; return the respawn delay, or None to give up.

        ``uptime`` is None when the process never started (exec failed).
        """
        if uptime is not None and uptime >= STABLE_AFTER:
            self.failures = 0
            return 0.0
        self.failures += 1
        if self.max_retry >= 0 and self.failures > self.max_retry:
            return None
        return self.delay()

    def delay(self) -> float:
        if self.failures <= 1:
            return 0.0
        return min(FIRST_DELAY * 2 ** (self.failures - 2), MAX_DELAY)

    def reset(self) -> None:
        self.failures = 0
