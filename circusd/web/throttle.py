"""Login throttling: too many failures from one address or for one user name
within a window refuse further attempts until the oldest failure is old
enough. Checked before the password is, so a locked-out guesser costs no
scrypt work; an attempt counts as failed until its password is found right,
so parallel attempts cannot slip through together."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 5
WINDOW = 300.0
MAX_KEYS = 10_000


def address_key(address: str) -> str:
    """The throttle key of a client address. A local user can connect from
    any of the 16 million loopback addresses, and an IPv6 client usually
    holds a whole /64: each counts as one address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "address:loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        return f"address:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"address:{ip}"


class Throttle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def wait(self, keys: Iterable[str]) -> float:
        """Seconds until an attempt for all ``keys`` is allowed (0: now)."""
        now = self._clock()
        longest = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                longest = max(longest, times[0] + self.window - now)
        return longest

    def failed(self, keys: Iterable[str]) -> float:
        """Count a failure for each key; returns its time, for ``forgive``.

        Count an attempt as failed before checking the password, so that
        attempts sent in parallel cannot all pass ``wait`` first."""
        now = self._clock()
        for key in keys:
            times = self._recent(key, now)
            if key not in self._failures:
                while len(self._failures) >= MAX_KEYS:
                    self._failures.popitem(last=False)
                self._failures[key] = times
            times.append(now)
            self._failures.move_to_end(key)
        return now

    def forgive(self, keys: Iterable[str], stamp: float) -> None:
        """Take back a failure counted at ``stamp`` (the password was right)."""
        for key in keys:
            times = self._failures.get(key)
            if times is not None and stamp in times:
                times.remove(stamp)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
