"""Login sessions, kept in memory, each with its own CSRF token.

A session id is 256 random bits in a cookie; the server keeps what it
means. Sessions end after ``IDLE`` seconds without a request, ``LIFETIME``
seconds after login, at logout, or when their user's line in the users file
changes. A restart of the console ends them all (nothing is written to disk,
and there is no signing key to keep secret).

Anonymous sessions carry only a CSRF token, for the login form; a login
always makes a new session (a session id known before login is worthless
after it).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE = 8 * 3600.0
LIFETIME = 24 * 3600.0
MAX_SESSIONS = 1000
MAX_ANONYMOUS = 1000


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    user: str | None = None
    role: str | None = None
    password_hash: str | None = None  # the user's hash at login
    notices: list[tuple[str, str]] = field(default_factory=list)

    def valid_csrf(self, token: str | None) -> bool:
        return bool(token) and secrets.compare_digest(self.csrf, str(token))


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._users: OrderedDict[str, Session] = OrderedDict()
        self._anonymous: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def anonymous(self) -> Session:
        """A new session for the login form (the oldest go past the cap)."""
        return self._add(self._anonymous, MAX_ANONYMOUS)

    def login(self, user: str, role: str, password_hash: str) -> Session:
        session = self._add(self._users, MAX_SESSIONS)
        session.user, session.role, session.password_hash = user, role, password_hash
        return session

    def _add(self, table: OrderedDict[str, Session], cap: int) -> Session:
        now = self._clock()
        while len(table) >= cap:
            table.popitem(last=False)
        session = Session(new_token(), new_token(), now, now)
        table[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, marked as seen; None otherwise."""
        if not session_id:
            return None
        now = self._clock()
        for table in (self._users, self._anonymous):
            session = table.get(session_id)
            if session is None:
                continue
            if now - session.seen > IDLE or now - session.created > LIFETIME:
                del table[session_id]
                return None
            session.seen = now
            table.move_to_end(session_id)
            return session
        return None

    def end(self, session: Session) -> None:
        self._users.pop(session.id, None)
        self._anonymous.pop(session.id, None)
