"""The request checks that do not depend on the page: who the client is
(``X-Forwarded-*`` believed only from a trusted proxy), which Host names are
accepted, whether a POST comes from the console's own pages, and the
headers every response carries.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from circusd.web.settings import Network, is_loopback_host

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers send "Origin: null" with the
    # console's own form posts, which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=()",
}
HSTS = "max-age=31536000"


@dataclass(frozen=True)
class Client:
    address: str  # the browser's address (the proxy's client, when trusted)
    scheme: str  # "http" or "https", as the browser sees the console
    host: str  # the Host the browser asked for
    proxied: bool = False

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host.lower()}"


def _is_trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def _last(value: str | None) -> str | None:
    if not value:
        return None
    item = value.split(",")[-1].strip()
    return item or None


def client_of(
    peer: str | None,
    headers: Mapping[str, str],
    proxies: tuple[Network, ...],
    tls: bool,
) -> Client:
    """The client behind a request. ``X-Forwarded-For``, ``-Proto`` and
    ``-Host`` count only when the connection comes from a trusted proxy; the
    client is then the right-most address in the chain that is not a
    trusted proxy itself."""
    address = peer or ""
    scheme = "https" if tls else "http"
    host = headers.get("Host", "")
    if not (peer and _is_trusted(peer, proxies)):
        return Client(address, scheme, host)
    chain = [a.strip() for a in headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([a for a in chain if a]):
        address = hop
        if not _is_trusted(hop, proxies):
            break
    proto = _last(headers.get("X-Forwarded-Proto"))
    if proto in ("http", "https"):
        scheme = proto
    host = _last(headers.get("X-Forwarded-Host")) or host
    return Client(address, scheme, host, proxied=True)


# A host name or IPv4 address, or an IPv6 address in brackets, and a port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """``example.org:8080`` → ``example.org``; ``[::1]:80`` → ``::1``; None
    when ``host`` is not a host and an optional port."""
    found = _HOST.fullmatch(host)
    return None if found is None else found[1].removeprefix("[").removesuffix("]")


def host_problem(client: Client, loopback_only: bool) -> str | None:
    """Plain HTTP on loopback answers only to loopback names: a page on
    another site cannot reach the console by pointing its own name at
    127.0.0.1 (DNS rebinding)."""
    if not client.host:
        return "missing Host header"
    name = host_name(client.host)
    if name is None:
        return f"malformed Host {client.host!r}"
    if loopback_only and not is_loopback_host(name):
        return (
            f"unexpected Host {client.host!r}: this console answers to loopback names"
        )
    return None


def cross_site_problem(headers: Mapping[str, str], client: Client) -> str | None:
    """Why a POST does not come from the console's own pages, or None.

    Browsers say where a request comes from in ``Sec-Fetch-Site`` and
    ``Origin``; either one naming another site is refused. Clients that send
    neither (curl, scripts) still need the CSRF token.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("Origin")
    if origin is not None and origin.lower() != client.origin:
        return f"request from another origin refused (Origin: {origin})"
    return None


def response_headers(client: Client | None, cache: bool = False) -> dict[str, str]:
    headers = dict(HEADERS)
    if client is not None and client.scheme == "https":
        headers["Strict-Transport-Security"] = HSTS
    if not cache:
        headers["Cache-Control"] = "no-store"
    return headers
