"""Host key checking against known_hosts, the way OpenSSH does it, but stricter.

A key that matches an entry for the host is accepted. A host with entries but
none matching the offered key is refused as a mismatch, whatever the key
type: the negotiation asks first for the types that are already known, so a
server that offers another type no longer has the known one. An unknown host
is refused, or with accept-new added to the user's known_hosts file. A
changed key is never accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko
from paramiko.hostkeys import HostKeyEntry

from circusd.client.ssh.errors import HostKeyMismatch, HostKeyUnknown, SSHError
from circusd.client.ssh.target import SSH_PORT, HostSettings

logger = logging.getLogger(__name__)

# The signature algorithms that can prove each host key type.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...``, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class KnownKey:
    key: paramiko.PKey
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def known_keys(settings: HostSettings) -> list[KnownKey]:
    """Every key that the known_hosts files hold for this host, in file order."""
    found = []
    name = settings.known_hosts_name
    for path in (*settings.known_hosts_files, *settings.global_known_hosts_files):
        try:
            with open(path, encoding="utf-8", errors="replace") as stream:
                lines = stream.readlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("skipped known_hosts file=%s error=%s", path, exc)
            continue
        for number, line in enumerate(lines, start=1):
            entry = _entry(line, number)
            if entry is not None and _names_match(name, entry.hostnames):
                found.append(KnownKey(entry.key, path, number))
    return found


def _entry(line: str, number: int) -> HostKeyEntry | None:
    text = line.strip()
    if not text or text.startswith(("#", "@")):
        return None  # markers (@cert-authority, @revoked) are not supported
    try:
        return HostKeyEntry.from_line(text, number)
    except Exception:  # a line paramiko cannot decode is skipped, as by ssh
        return None


def _names_match(name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("|1|"):
            if hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern), pattern):
                return True
        elif pattern == name:
            return True
    return False


def preferred_key_types(known: Sequence[KnownKey], offered: Sequence[str]) -> list[str]:
    """``offered`` (what the transport supports) with the known types first."""
    first: list[str] = []
    for entry in known:
        for name in _ALGORITHMS.get(entry.key.get_name(), (entry.key.get_name(),)):
            if name in offered and name not in first:
                first.append(name)
    return first + [name for name in offered if name not in first]


def check_host_key(
    settings: HostSettings,
    key: paramiko.PKey,
    known: Sequence[KnownKey],
    notice: Callable[[str], None] | None = None,
) -> None:
    """Accept ``key`` for the host, or raise HostKeyUnknown / HostKeyMismatch."""
    name = settings.known_hosts_name
    offered = f"{key.get_name()} {fingerprint(key)}"
    if any(entry.key == key for entry in known):
        return
    if known:
        same_type = [e for e in known if e.key.get_name() == key.get_name()]
        where = (same_type or list(known))[0].where
        raise HostKeyMismatch(
            f"host key mismatch for {name}: the server offered {offered}, but "
            f"{where} holds another key for it; refusing to connect (the key "
            "changed or someone is intercepting the connection); if the change "
            f"is expected, remove the old key with `ssh-keygen -R {shlex.quote(name)}`"
        )
    if not settings.accept_new:
        raise HostKeyUnknown(
            f"unknown host key for {name}: the server offered {offered}, which is "
            "in no known_hosts file; check that fingerprint, then add the key "
            f"with `{_keyscan(settings)} >> ~/.ssh/known_hosts` or accept new "
            "host keys once with --ssh-accept-new"
        )
    path = add_host_key(settings, key)
    logger.info("added host key host=%s key=%s file=%s", name, offered, path)
    if notice is not None:
        notice(f"added host key for {name} ({offered}) to {path}")


def _keyscan(settings: HostSettings) -> str:
    port = f"-p {settings.port} " if settings.port != SSH_PORT else ""
    return f"ssh-keyscan {port}{shlex.quote(settings.hostname)}"


def add_host_key(settings: HostSettings, key: paramiko.PKey) -> str:
    """Append ``key`` to the first user known_hosts file; returns its path."""
    if not settings.known_hosts_files:
        raise SSHError(
            f"cannot add the host key for {settings.known_hosts_name}: "
            "UserKnownHostsFile is none"
        )
    path = settings.known_hosts_files[0]
    name = settings.known_hosts_name
    if settings.hash_known_hosts:
        name = paramiko.HostKeys.hash_host(name)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as stream:
            if stream.tell() > 0 and not _ends_with_newline(path):
                line = "\n" + line
            stream.write(line)
    except OSError as exc:
        raise SSHError(
            f"cannot add the host key for {settings.known_hosts_name} to {path}: "
            f"{exc.strerror}"
        ) from None
    return path


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"
