"""Checks and normalisations of single values that need the system.

Paths relative to the config file, ZeroMQ endpoints, unix socket path
lengths, users and groups, socket families. Each function raises
ValueProblem; the loader adds the file, line, section and key.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import re
import socket

from circusd.errors import ValueProblem

# sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107

_NAME_PART = r"[A-Za-z_]\w*"
_DOTTED = re.compile(
    rf"{_NAME_PART}(?:\.{_NAME_PART})*(?::{_NAME_PART}(?:\.{_NAME_PART})*)?"
)
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# Used only when /etc/protocols is missing (minimal containers).
_PROTOCOLS = {"ip": 0, "icmp": 1, "tcp": 6, "udp": 17, "ipv6": 41, "sctp": 132}


def absolute(base: str, path: str) -> str:
    """``path`` resolved against ``base`` (the config file's directory)."""
    if os.path.isabs(path):
        return path
    # Drop "." parts only; ".." is kept, since it means something else
    # after a symbolic link.
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return os.path.join(base, *parts)


def unix_path(path: str) -> str:
    """Refuse a unix socket path the kernel cannot bind."""
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise ValueProblem(
            f"unix socket path {path!r} is {size} bytes; the limit is "
            f"{UNIX_PATH_MAX} bytes (use a shorter directory)"
        )
    return path


def zmq_endpoint(value: str, base: str) -> str:
    """A control/pubsub/stats endpoint: ``tcp://HOST:PORT`` or ``ipc://PATH``.

    A relative ipc path is made absolute against ``base``; ``ipc://@name``
    (the abstract namespace) is left alone.
    """
    if value.startswith("ipc://"):
        path = value[len("ipc://") :]
        if not path:
            raise ValueProblem(f"expected ipc://PATH, got {value!r}")
        if not path.startswith("@"):
            path = absolute(base, path)
        return "ipc://" + unix_path(path)
    if value.startswith("tcp://"):
        host, colon, port = value[len("tcp://") :].rpartition(":")
        if not colon or not host or not (port == "*" or _is_port(port)):
            raise ValueProblem(f"expected tcp://HOST:PORT, got {value!r}")
        return value
    raise ValueProblem(f"expected tcp://HOST:PORT or ipc://PATH, got {value!r}")


def host_port(value: str) -> str:
    """``HOST:PORT`` for a plain TCP listener (``[::1]:PORT`` for IPv6)."""
    host, colon, port = value.strip().rpartition(":")
    if not colon or not host or not _is_port(port):
        raise ValueProblem(f"expected HOST:PORT such as 127.0.0.1:9105, got {value!r}")
    if host.startswith("[") != host.endswith("]"):
        raise ValueProblem(f"expected [IPV6]:PORT, got {value!r}")
    return f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1 (brackets allowed)."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Addresses or networks, separated by commas or spaces."""
    found = []
    for item in value.replace(",", " ").split():
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueProblem(
                f"invalid address {item!r}: expected an IP address or network"
            ) from None
    return tuple(found)


def udp_endpoint(value: str) -> str:
    host, colon, port = value.removeprefix("udp://").rpartition(":")
    if not value.startswith("udp://") or not colon or not host or not _is_port(port):
        raise ValueProblem(f"expected udp://HOST:PORT, got {value!r}")
    return value


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def log_output(value: str, base: str) -> str:
    if value == "-" or value.startswith("syslog:"):
        return value
    return absolute(base, value)


def log_level(value: str) -> str:
    if value.lower() not in _LOG_LEVELS:
        raise ValueProblem(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return value.lower()


def user(value: str | int) -> None:
    """Refuse a user name that does not exist (numbers are taken as they are)."""
    if isinstance(value, str):
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise ValueProblem(f"unknown user {value!r}") from None


def group(value: str | int) -> None:
    if isinstance(value, str):
        try:
            grp.getgrnam(value)
        except KeyError:
            raise ValueProblem(f"unknown group {value!r}") from None


def has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def socket_constant(value: str, prefix: str, allowed: tuple[str, ...]) -> str:
    """``AF_INET``/``inet``/``af_inet`` -> ``AF_INET``, if it is allowed."""
    name = value.strip().upper()
    if not name.startswith(prefix):
        name = prefix + name
    if name not in allowed or not hasattr(socket, name):
        raise ValueProblem(f"expected one of {', '.join(allowed)}, got {value!r}")
    return name


def protocol(value: str) -> str:
    name = value.strip().lower()
    if name.isdigit():
        return name
    try:
        socket.getprotobyname(name)
    except OSError:
        if name not in _PROTOCOLS:
            raise ValueProblem(
                f"unknown protocol {value!r}; expected a name such as tcp or udp"
            ) from None
    return name


def dotted_name(value: str, what: str) -> str:
    """A Python ``module.attribute`` path (nothing is imported here)."""
    stripped = value.strip()
    if not _DOTTED.fullmatch(stripped) or "." not in stripped.replace(":", "."):
        raise ValueProblem(
            f"expected {what} as a dotted Python path like package.module.name, "
            f"got {value!r}"
        )
    return stripped
