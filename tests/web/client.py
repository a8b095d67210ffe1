"""A small HTTP client for the console tests: it keeps cookies, never follows
redirects, and sends exactly the headers a test gives (Origin, Host,
Sec-Fetch-Site, X-Forwarded-For), which is the point of most tests."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str
    cookies: list[str]  # the Set-Cookie lines

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


class Http:
    def __init__(self, url: str, cafile: str | None = None) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.cookies: dict[str, str] = {}
        self.headers: dict[str, str] = {}  # sent with every request
        self._tls = ssl.create_default_context(cafile=cafile) if cafile else None

    def _connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=15, context=self._tls
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=15)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cookies: bool = True,
    ) -> Reply:
        sent = {**self.headers, **(headers or {})}
        body = None
        if form is not None:
            body = urlencode(form)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if cookies and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        set_cookies = response.headers.get_all("Set-Cookie") or []
        for line in set_cookies:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Reply(response.status, response.headers, text, set_cookies)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, form=form, **kwargs)

    def same_origin(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a browser adds to a form post from the console's own page."""
        return {"Origin": self.origin, "Sec-Fetch-Site": "same-origin", **(extra or {})}

    def csrf(self, path: str = "/") -> str:
        page = self.get(path)
        found = _CSRF.search(page.body)
        assert found, f"no CSRF token on {path} (HTTP {page.status})"
        return found.group(1)

    def login(
        self, user: str, password: str, headers: dict[str, str] | None = None
    ) -> Reply:
        token = self.csrf("/login")
        return self.post(
            "/login",
            {"csrf": token, "username": user, "password": password, "next": "/"},
            headers=self.same_origin(headers),
        )

    def act(self, watcher: str, action: str, **fields: str) -> Reply:
        """An action the way the page's script sends it."""
        form = {"csrf": self.csrf("/"), **fields}
        headers = self.same_origin({"Accept": "application/json"})
        return self.post(f"/watchers/{watcher}/{action}", form, headers=headers)


class EventStream:
    """``GET /events`` read as server-sent events, each within ``timeout``."""

    def __init__(self, http: Http, path: str, timeout: float = 10.0) -> None:
        self._connection = http._connection()
        self._connection.timeout = timeout
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        self._connection.request("GET", path, headers={"Cookie": cookie})
        self.response = self._connection.getresponse()

    def next(self) -> tuple[str, str]:
        """The next event's name and data (comments and retry lines skipped)."""
        name, data = "message", []
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if line == "" and data:
                return name, "\n".join(data)
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])

    def until(self, wanted: str, test: Any = lambda data: True) -> Any:
        """Events until one named ``wanted`` whose JSON data passes ``test``."""
        while True:
            name, data = self.next()
            if name == wanted and test(json.loads(data)):
                return json.loads(data)

    def close(self) -> None:
        self._connection.close()
