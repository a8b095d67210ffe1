"""The console's pages, actions and live updates, behind the Gate."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from aiohttp import web

from circusd.client import CallError, ReplyError
from circusd.web import pages
from circusd.web.assets import load_assets
from circusd.web.console import Console
from circusd.web.gate import Form, Gate, safe_path, see_other, wants_json
from circusd.web.hub import Changed, Full, Problem, Stat
from circusd.web.passwords import Role, UserStore
from circusd.web.security import Client, response_headers
from circusd.web.sessions import Session
from circusd.web.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
KEEPALIVE = 15.0
PAGE_REFRESH_TIMEOUT = 3.0
# Actions that would leave the operator without the console they are using
# (restart is fine: circusd starts it again on the socket it holds).
ENDS_THE_CONSOLE = frozenset({"stop", "decr", "signal"})


class WebConsole:
    def __init__(
        self,
        settings: Settings,
        users: UserStore,
        console: Console,
        loopback_only: bool,
    ) -> None:
        self.console = console
        self.assets, self.version = load_assets()
        self.gate = Gate(settings, users, console.hub, loopback_only, self.version)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self._shutdown)
        gate = self.gate
        gate.routes(app)
        app.router.add_get("/", gate.page(self.overview))
        app.router.add_get("/watchers/{name}", gate.page(self.watcher))
        app.router.add_post("/watchers/{name}/{action}", gate.form(self.action))
        app.router.add_get("/events", gate.page(self.events))
        app.router.add_get("/api/watchers", gate.page(self.api_watchers))
        app.router.add_get("/static/{file}", self.static)
        return app

    async def _headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        static = request.path.startswith("/static/") and response.status < 400
        client = self.gate.client(request)
        for key, value in response_headers(client, cache=static).items():
            response.headers.setdefault(key, value)
        response.headers["Server"] = "circushttpd"

    async def _shutdown(self, app: web.Application) -> None:
        self.console.hub.close_all()
        self.gate.close()

    # -- pages ---------------------------------------------------------------------

    async def _refreshed(self) -> None:
        """A model fit for a page. While events keep it current, the page
        is served at once and a refresh is asked for anyway (its result
        reaches the open page live), so a lost event heals at the next page
        load. Otherwise wait for one, within a bound: a page from slightly
        old data beats no page while circusd is slow."""
        if self.console.current:
            self.console.request()
            return
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
        if action in ENDS_THE_CONSOLE and self._runs_the_console(name):
            log.warning(
                "action refused user=%s command=%s watcher=%s reason='the console'",
                session.user,
                action,
                name,
            )
            text = (
                f"refused: {action} on {name} would end this console, which runs "
                "in it; use circusctl"
            )
            return self._answer(request, session, back, 409, text)
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

    def _runs_the_console(self, name: str) -> bool:
        view = self.console.model.watchers.get(name)
        return view is not None and os.getpid() in view.processes

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
        hub = self.console.hub
        try:
            subscription = hub.subscribe(watcher, session.id)
        except Full as exc:
            return self.gate.refuse(request, 503, str(exc))
        model = self.console.model
        try:
            await response.prepare(request)
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
