"""Fan-out of live updates: one subscription to circusd, many browsers.

Each open page holds a Subscription (a bounded queue). A page that cannot
keep up is closed rather than buffered without limit; the browser's
EventSource reconnects and starts again from the current state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

QUEUE = 512
MAX_PAGES = 256  # open pages in all
MAX_PAGES_PER_SESSION = 16


class Full(Exception):
    """Too many open pages (event streams); the text says which limit."""


@dataclass(frozen=True)
class Changed:
    """The watchers named (all of them when None) have a new state."""

    names: frozenset[str] | None


@dataclass(frozen=True)
class Stat:
    watcher: str
    pid: int | None
    payload: str  # JSON, encoded once for every page


@dataclass(frozen=True)
class Problem:
    text: str | None  # None: circusd answers again


Item = Changed | Stat | Problem


class Subscription:
    def __init__(self, watcher: str | None, session_id: str) -> None:
        self.watcher = watcher  # None: the overview page
        self.session_id = session_id
        self.closed = False
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(QUEUE)

    def wants(self, item: Item) -> bool:
        if isinstance(item, Stat):
            if self.watcher is None:
                return item.pid is None
            return item.watcher == self.watcher
        if isinstance(item, Changed) and self.watcher is not None:
            return item.names is None or self.watcher in item.names
        return True

    def offer(self, item: Item | None) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.info("slow page dropped watcher=%s", self.watcher or "-")
            self.close()

    def close(self) -> None:
        """End the stream: the page's handler sees ``None`` or ``closed``."""
        if not self.closed:
            self.closed = True
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                pass  # the handler checks ``closed`` after each item

    async def next(self, timeout: float) -> Item | None:
        """The next item; None when closed. Raises TimeoutError when idle."""
        if self.closed and self._queue.empty():
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError from None


class Hub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, watcher: str | None, session_id: str) -> Subscription:
        """Raises Full when the console or the session has too many pages open."""
        if len(self._subscriptions) >= MAX_PAGES:
            raise Full(f"too many open pages ({MAX_PAGES}) on this console")
        mine = sum(1 for s in self._subscriptions if s.session_id == session_id)
        if mine >= MAX_PAGES_PER_SESSION:
            raise Full(f"too many open pages ({MAX_PAGES_PER_SESSION}) in this session")
        subscription = Subscription(watcher, session_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        self._subscriptions.discard(subscription)

    def publish(self, item: Item) -> None:
        for subscription in list(self._subscriptions):
            if subscription.wants(item):
                subscription.offer(item)

    def end_session(self, session_id: str) -> None:
        for subscription in list(self._subscriptions):
            if subscription.session_id == session_id:
                subscription.close()

    def close_all(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()
