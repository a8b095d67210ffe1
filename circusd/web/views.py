"""The console's routes, each behind the same checks.

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
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from circusd.client import CallError, ReplyError
from circusd.web import pages
from circusd.web.assets import load_assets
from circusd.web.console import Console
from circusd.web.hub import Changed, Problem, Stat
from circusd.web.passwords import Role, UsersFileError, UserStore, check_login
from circusd.web.security import (
    Client,
    client_of,
    cross_site_problem,
    host_problem,
    response_headers,
)
from circusd.web.sessions import Session, Sessions
from circusd.web.settings import Settings
from circusd.web.throttle import Throttle

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
KEEPALIVE = 15.0
PAGE_REFRESH_TIMEOUT = 3.0
_BACK = re.compile(r"/(watchers/[^/?#\\]+)?")

Form = MultiDictProxy[Any]
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


class WebConsole:
    def __init__(
        self,
        settings: Settings,
        users: UserStore,
        console: Console,
        loopback_only: bool,
    ) -> None:
        self.settings = settings
        self.users = users
        self.console = console
        self.loopback_only = loopback_only
        self.sessions = Sessions()
        self.throttle = Throttle()
        self.assets, self.version = load_assets()
        # Password checks cost real CPU and memory: at most two at a time.
        self._hashing = ThreadPoolExecutor(2, thread_name_prefix="scrypt")

    # -- the application -----------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self._shutdown)
        app.router.add_get("/login", self.page(self.login_form, login=False))
        app.router.add_post("/login", self.form(self.login, login=False))
        app.router.add_post("/logout", self.form(self.logout))
        app.router.add_get("/", self.page(self.overview))
        app.router.add_get("/watchers/{name}", self.page(self.watcher))
        app.router.add_post("/watchers/{name}/{action}", self.form(self.action))
        app.router.add_get("/events", self.page(self.events))
        app.router.add_get("/api/watchers", self.page(self.api_watchers))
        app.router.add_get("/static/{file}", self.static)
        return app

    async def _headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        static = request.path.startswith("/static/") and response.status < 400
        client = self._client(request)
        for key, value in response_headers(client, cache=static).items():
            response.headers.setdefault(key, value)
        response.headers["Server"] = "circushttpd"

    async def _shutdown(self, app: web.Application) -> None:
        self.console.hub.close_all()
        self._hashing.shutdown(wait=False)

    # -- the checks ----------------------------------------------------------------

    def _client(self, request: web.Request) -> Client:
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
        if user is None or user.hash != session.password_hash:
            self._end(session)
            return False
        return True

    def _end(self, session: Session) -> None:
        self.sessions.end(session)
        self.console.hub.end_session(session.id)

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
        client = self._client(request)
        problem = host_problem(client, self.loopback_only)
        if problem is not None:
            log.warning("refused address=%s reason=%r", client.address, problem)
            return self.refuse(request, 400, problem)
        return client

    def page(
        self, handler: PageHandler, login: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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

    def form(
        self, handler: FormHandler, login: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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
            form = await request.post()
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
        keys = [f"address:{client.address}", f"user:{name}"]
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
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._hashing, check_login, user, password):
            self.throttle.failed(keys)
            log.warning("login failed user=%r address=%s", name, client.address)
            return self._login_again(
                session, "Wrong user name or password.", next_path, 401
            )
        assert user is not None
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

    # -- pages ---------------------------------------------------------------------

    async def _refreshed(self) -> None:
        """Bring the model up to date for a page, within a bound: a page
        from slightly old data beats no page while circusd is slow."""
        try:
            await asyncio.wait_for(
                asyncio.shield(self.console.refresh()), PAGE_REFRESH_TIMEOUT
            )
        except TimeoutError:
            log.warning("page served without a fresh state: circusd is slow")

    def _html(self, text: str, session: Session) -> web.Response:
        session.notices.clear()  # shown once
        return web.Response(text=text, content_type="text/html")

    async def overview(
        self, request: web.Request, client: Client, session: Session
    ) -> web.StreamResponse:
        await self._refreshed()
        return self._html(
            pages.overview(self.console.model, session, self.version), session
        )

    async def watcher(
        self, request: web.Request, client: Client, session: Session
    ) -> web.StreamResponse:
        await self._refreshed()
        name = request.match_info["name"]
        view = self.console.model.watchers.get(name)
        if view is None:
            return web.Response(
                text=pages.not_found_page(name, session, self.version),
                status=404,
                content_type="text/html",
            )
        return self._html(
            pages.watcher_page(self.console.model, view, session, self.version),
            session,
        )

    async def api_watchers(
        self, request: web.Request, client: Client, session: Session
    ) -> web.StreamResponse:
        await self._refreshed()
        return web.json_response(self.console.model.snapshot())

    async def static(self, request: web.Request) -> web.StreamResponse:
        asset = self.assets.get(request.match_info["file"])
        if asset is None:
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers={"ETag": asset.etag})
        return web.Response(
            body=asset.body,
            headers={
                "Content-Type": asset.content_type,
                "ETag": asset.etag,
                "Cache-Control": "no-cache",
            },
        )

    # -- actions -------------------------------------------------------------------

    async def action(
        self, request: web.Request, client: Client, session: Session, form: Form
    ) -> web.StreamResponse:
        name = request.match_info["name"]
        action = request.match_info["action"]
        back = safe_path(form.get("back"), pages.watcher_url(name))
        try:
            properties = _properties(action, name, form)
        except ValueError as exc:
            return self._answer(request, session, back, 400, str(exc))
        if session.role != Role.OPERATE.value:
            text = (
                f"refused: console user {session.user} may only look "
                f"(role {session.role})"
            )
            log.warning(
                "action refused user=%s command=%s watcher=%s reason='console role'",
                session.user,
                action,
                name,
            )
            return self._answer(request, session, back, 403, text)
        try:
            await self.console.act(action, **properties)
        except ReplyError as exc:
            status = 403 if exc.reason.startswith("permission denied") else 409
            log.warning("action refused user=%s command=%s watcher=%s reason=%r",
                        session.user, action, name, exc.reason)  # fmt: skip
            return self._answer(
                request,
                session,
                back,
                status,
                f"circusd refused {action} on {name}: {exc.reason}",
            )
        except CallError as exc:
            return self._answer(
                request, session, back, 503, f"{action} on {name} failed: {exc}"
            )
        log.info("action user=%s command=%s watcher=%s address=%s",
                 session.user, action, name, client.address)  # fmt: skip
        return self._answer(
            request, session, back, 200, f"circusd accepted {action} on {name}"
        )

    def _answer(
        self, request: web.Request, session: Session, back: str, status: int, text: str
    ) -> web.StreamResponse:
        """JSON for the page's script; otherwise a notice and back to the page."""
        if wants_json(request):
            return web.json_response(
                {"ok": status == 200, "message": text}, status=status
            )
        session.notices.append(("ok" if status == 200 else "refused", text))
        return see_other(back)

    # -- live updates --------------------------------------------------------------

    async def events(
        self, request: web.Request, client: Client, session: Session
    ) -> web.StreamResponse:
        watcher = request.query.get("watcher")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        hub = self.console.hub
        subscription = hub.subscribe(watcher, session.id)
        model = self.console.model
        try:
            await response.write(b"retry: 2000\n\n")
            await _send(response, "hello", {"now": model.clock()})
            await _send(
                response, "problem", {"html": pages.problem_text(model.problem)}
            )
            await _send(response, "fragments", self._fragments(watcher, session))
            await _send(response, "history", model.series_of(watcher))
            while True:
                try:
                    item = await subscription.next(KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if item is None or subscription.closed:
                    break
                if isinstance(item, Stat):
                    await response.write(
                        f"event: stat\ndata: {item.payload}\n\n".encode()
                    )
                elif isinstance(item, Changed):
                    await _send(
                        response, "fragments", self._fragments(watcher, session)
                    )
                elif isinstance(item, Problem):
                    await _send(
                        response, "problem", {"html": pages.problem_text(item.text)}
                    )
        except (ConnectionError, RuntimeError):
            pass  # the browser went away
        finally:
            hub.unsubscribe(subscription)
        return response

    def _fragments(self, watcher: str | None, session: Session) -> dict[str, str]:
        model = self.console.model
        if watcher is None:
            return {"watchers": pages.watcher_rows(model, session)}
        view = model.watchers.get(watcher)
        if view is None:
            gone = f"<h1>Watcher {pages.e(watcher)} no longer exists</h1>"
            return {"summary": gone, "processes": ""}
        return {
            "summary": pages.summary(view, session),
            "processes": pages.process_rows(view, model.clock()),
        }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


_SIGNALS = frozenset(pages.SIGNALS)


def _properties(action: str, name: str, form: Form) -> dict[str, Any]:
    """The control request for one action; ValueError names what is wrong."""
    if action in ("start", "stop", "restart"):
        return {"name": name, "match": "simple"}
    if action == "reload":
        return {"name": name}
    if action in ("incr", "decr"):
        return {"name": name, "nb": 1}
    if action == "signal":
        signum = str(form.get("signum", "")).upper().removeprefix("SIG")
        if signum not in _SIGNALS:
            raise ValueError(
                f"unknown signal {signum!r}: expected one of {', '.join(pages.SIGNALS)}"
            )
        properties: dict[str, Any] = {"name": name, "signum": signum}
        pid = str(form.get("pid", "")).strip()
        if pid:
            if not pid.isdecimal() or not 0 < int(pid) < 2**22:
                raise ValueError(f"invalid pid {pid!r}: expected a process number")
            properties["pid"] = int(pid)
        return properties
    raise ValueError(f"unknown action {action!r}")
