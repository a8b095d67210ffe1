"""Who may come in: the checks every route goes through, and logging in
and out.

Every handler is registered through ``page`` (GET) or ``form`` (POST):

- both check the Host (``security.host_problem``) and find the session;
- ``page`` sends a visitor who is not logged in to the login form (an API
  or event-stream request gets 401);
- ``form`` refuses a cross-site request (``Sec-Fetch-Site``, ``Origin``),
  then a request without the session's CSRF token, then one without a
  login (except the login form itself).

State changes exist only as POST routes, so a GET cannot change anything
(aiohttp answers 405 to a GET on them).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from circusd.web import pages
from circusd.web.connections import read_body
from circusd.web.hub import Hub
from circusd.web.passwords import UsersFileError, UserStore, check_login
from circusd.web.security import Client, client_of, cross_site_problem, host_problem
from circusd.web.sessions import Session, Sessions
from circusd.web.settings import Settings
from circusd.web.throttle import Throttle, address_key

log = logging.getLogger(__name__)

# Password checks waiting or running; beyond, logins are refused for a
# moment instead of queueing CPU and memory work without bound.
MAX_CHECKING = 8
_BACK = re.compile(r"/(watchers/[^/?#\\\x00-\x20\x7f]+)?")  # no controls, no spaces

Form = MultiDictProxy[Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PageHandler = Callable[[web.Request, Client, Session], Awaitable[web.StreamResponse]]
FormHandler = Callable[
    [web.Request, Client, Session, Form], Awaitable[web.StreamResponse]
]


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def safe_path(value: object, default: str = "/") -> str:
    """A path on this console to send the browser back to, never elsewhere."""
    text = value if isinstance(value, str) else ""
    return text if _BACK.fullmatch(text) else default


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class Gate:
    """Sessions, logins and the checks; ``page`` and ``form`` wrap handlers."""

    def __init__(
        self,
        settings: Settings,
        users: UserStore,
        hub: Hub,
        loopback_only: bool,
        asset_version: str,
    ) -> None:
        self.settings = settings
        self.users = users
        self.hub = hub
        self.loopback_only = loopback_only
        self.version = asset_version
        self.sessions = Sessions()
        self.throttle = Throttle()
        # Password checks cost real CPU and memory: at most two at a time.
        self._hashing = ThreadPoolExecutor(2, thread_name_prefix="scrypt")
        self._checking = 0  # logins waiting for or in a password check

    def close(self) -> None:
        self._hashing.shutdown(wait=False)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/login", self.page(self.login_form, login=False))
        app.router.add_post("/login", self.form(self.login, login=False))
        app.router.add_post("/logout", self.form(self.logout))

    # -- the checks ----------------------------------------------------------------

    def client(self, request: web.Request) -> Client:
        peername = (
            request.transport.get_extra_info("peername") if request.transport else None
        )
        peer = str(peername[0]) if isinstance(peername, tuple) else None
        return client_of(
            peer, request.headers, self.settings.trusted_proxies, self.settings.tls
        )

    def _cookie_name(self, client: Client) -> str:
        # The __Host- prefix makes the browser insist on Secure, Path=/ and
        # no Domain: no other site or subdomain can plant or read it.
        return "__Host-circushttpd" if client.scheme == "https" else "circushttpd"

    def _session(self, request: web.Request, client: Client) -> Session | None:
        return self.sessions.get(request.cookies.get(self._cookie_name(client)))

    def _logged_in(self, session: Session | None) -> bool:
        """A session whose user still exists with the same password hash."""
        if session is None or session.user is None:
            return False
        try:
            user = self.users.get(session.user)
        except UsersFileError as exc:
            log.error("users file unusable, every session refused: %s", exc)
            return False
        if (
            user is None
            or user.hash != session.password_hash
            or user.role.value != session.role
        ):
            self._end(session)
            return False
        return True

    def _end(self, session: Session) -> None:
        self.sessions.end(session)
        self.hub.end_session(session.id)

    def _set_cookie(
        self, response: web.StreamResponse, client: Client, session: Session
    ) -> None:
        response.set_cookie(
            self._cookie_name(client),
            session.id,
            path="/",
            httponly=True,
            secure=client.scheme == "https",
            samesite="Strict",
        )

    def refuse(self, request: web.Request, status: int, text: str) -> web.Response:
        if wants_json(request) or request.path.startswith(("/api/", "/events")):
            return web.json_response({"ok": False, "message": text}, status=status)
        html = pages.refused_page(text, self.version)
        return web.Response(text=html, status=status, content_type="text/html")

    def _checked_client(self, request: web.Request) -> Client | web.Response:
        client = self.client(request)
        problem = host_problem(client, self.loopback_only)
        if problem is not None:
            log.warning("refused address=%s reason=%r", client.address, problem)
            return self.refuse(request, 400, problem)
        return client

    def page(self, handler: PageHandler, login: bool = True) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            client = self._checked_client(request)
            if isinstance(client, web.Response):
                return client
            session = self._session(request, client)
            if login and not self._logged_in(session):
                if request.path.startswith(("/api/", "/events")):
                    return self.refuse(request, 401, "not logged in")
                return see_other(pages.login_url(request.path_qs))
            assert session is not None or not login
            return await handler(request, client, session)  # type: ignore[arg-type]

        return checked

    def form(self, handler: FormHandler, login: bool = True) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            client = self._checked_client(request)
            if isinstance(client, web.Response):
                return client
            problem = cross_site_problem(request.headers, client)
            if problem is not None:
                log.warning("refused address=%s path=%s reason=%r",
                            client.address, request.path, problem)  # fmt: skip
                return self.refuse(request, 403, problem)
            session = self._session(request, client)
            if session is None:
                what = (
                    "session expired: reload the login page"
                    if not login
                    else "not logged in"
                )
                return self.refuse(request, 401 if login else 403, what)
            form = await read_body(request)
            token = _text(form.get("csrf")) or request.headers.get("X-CSRF-Token")
            if not session.valid_csrf(token):
                log.warning("refused address=%s path=%s reason='csrf token %s'",
                            client.address, request.path,
                            "missing" if not token else "wrong")  # fmt: skip
                return self.refuse(
                    request, 403, "missing or wrong CSRF token: reload the page"
                )
            if login and not self._logged_in(session):
                return self.refuse(request, 401, "not logged in")
            return await handler(request, client, session, form)

        return checked

    # -- logging in and out --------------------------------------------------------

    async def login_form(
        self, request: web.Request, client: Client, session: Session | None
    ) -> web.StreamResponse:
        next_path = safe_path(request.query.get("next"))
        if self._logged_in(session):
            return see_other(next_path)
        fresh = session is None or session.user is not None
        if session is None or session.user is not None:
            session = self.sessions.anonymous()
        response = web.Response(
            text=pages.login_page(session, None, next_path), content_type="text/html"
        )
        if fresh:
            self._set_cookie(response, client, session)
        return response

    def _login_again(
        self, session: Session, message: str, next_path: str, status: int
    ) -> web.Response:
        return web.Response(
            text=pages.login_page(session, message, next_path),
            status=status,
            content_type="text/html",
        )

    async def login(
        self, request: web.Request, client: Client, session: Session, form: Form
    ) -> web.StreamResponse:
        name = str(form.get("username", ""))[:64]
        password = str(form.get("password", ""))
        next_path = safe_path(form.get("next"))
        keys = [address_key(client.address), f"user:{name}"]
        wait = self.throttle.wait(keys)
        if wait > 0:
            log.warning("login throttled user=%r address=%s", name, client.address)
            response = self._login_again(
                session,
                f"Too many failed logins: try again in {int(wait) + 1} s.",
                next_path,
                429,
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        try:
            user = self.users.get(name)
        except UsersFileError as exc:
            log.error("login impossible: %s", exc)
            return self._login_again(
                session, "Logins are unavailable: the users file cannot be read.",
                next_path, 503,
            )  # fmt: skip
        if self._checking >= MAX_CHECKING:
            log.warning("login refused, busy user=%r address=%s", name, client.address)
            return self._login_again(
                session, "Too many logins at once: try again.", next_path, 503
            )
        stamp = self.throttle.failed(keys)
        self._checking += 1
        try:
            loop = asyncio.get_running_loop()
            right = await loop.run_in_executor(
                self._hashing, check_login, user, password
            )
        finally:
            self._checking -= 1
        if not right:
            log.warning("login failed user=%r address=%s", name, client.address)
            return self._login_again(
                session, "Wrong user name or password.", next_path, 401
            )
        assert user is not None
        self.throttle.forgive(keys, stamp)
        self.throttle.succeeded(f"user:{name}")
        self._end(session)
        session = self.sessions.login(user.name, user.role.value, user.hash)
        log.info(
            "login user=%s role=%s address=%s", user.name, user.role, client.address
        )
        response = see_other(next_path)
        self._set_cookie(response, client, session)
        return response

    async def logout(
        self, request: web.Request, client: Client, session: Session, form: Form
    ) -> web.StreamResponse:
        log.info("logout user=%s address=%s", session.user, client.address)
        self._end(session)
        response = see_other("/login")
        response.del_cookie(self._cookie_name(client), path="/")
        return response
