"""What the console needs to know, and the rules on where it may listen.

Plain HTTP is allowed only on loopback. Anything else needs TLS (a
certificate and key) or a trusted reverse proxy stated by its address, which
then terminates TLS itself.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from circusd.config import checks
from circusd.errors import CircusdError, ValueProblem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(CircusdError):
    """The console's settings are inconsistent or unsafe."""


@dataclass(frozen=True)
class Settings:
    endpoint: str
    users_file: str
    pubsub_endpoint: str | None = None  # None: ask circusd (globaloptions)
    stats_endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    fd: int | None = None  # a listening socket passed by circusd
    certfile: str | None = None
    keyfile: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    timeout: float = 5.0

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def parse_proxies(text: str) -> tuple[Network, ...]:
    """Addresses or networks, separated by commas or spaces."""
    try:
        return checks.networks(text)
    except ValueProblem as exc:
        raise SettingsError(f"invalid trusted proxy: {exc}") from None


def is_loopback_host(host: str) -> bool:
    return checks.is_loopback(host)


def check(settings: Settings, bound: socket.socket | None = None) -> None:
    """Refuse plain HTTP beyond loopback without a stated proxy, and half a
    TLS setup. ``bound``: the passed socket, whose real address counts."""
    if (settings.certfile is None) != (settings.keyfile is None):
        raise SettingsError("TLS needs both a certificate file and a key file")
    if bound is not None:
        if bound.family not in (socket.AF_INET, socket.AF_INET6):
            raise SettingsError(
                f"the passed socket (fd {settings.fd}) is not a TCP socket"
            )
        host = str(bound.getsockname()[0])
    else:
        host = settings.host
    if is_loopback_host(host) or settings.tls or settings.trusted_proxies:
        return
    raise SettingsError(
        f"refusing plain HTTP on {host}, which other hosts can reach: give a "
        "TLS certificate and key, or state the reverse proxy in front of the "
        "console (trusted proxy address), or listen on 127.0.0.1"
    )
