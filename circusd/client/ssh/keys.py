"""Private keys for public-key authentication: files and the ssh-agent.

A key file is read once per process and kept in a KeyRing, which several
sessions (one per host) share. An encrypted key asks its passphrase through
the KeyRing's prompt, at most three times; ``preload`` does that up front,
in the calling thread, so that sessions running in parallel never prompt.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paramiko
from paramiko.pkey import PublicBlob

from circusd.client.ssh.errors import KeyFileError

logger = logging.getLogger(__name__)

PassphrasePrompt = Callable[[str], str]
PASSPHRASE_ATTEMPTS = 3


def _key_classes() -> list[type[paramiko.PKey]]:
    classes: list[type[paramiko.PKey]] = [
        paramiko.Ed25519Key,
        paramiko.ECDSAKey,
        paramiko.RSAKey,
    ]
    dss = getattr(paramiko, "DSSKey", None)  # removed in paramiko 4
    return classes + ([dss] if dss is not None else [])


def load_key_file(path: str, prompt: PassphrasePrompt | None = None) -> paramiko.PKey:
    """The private key in ``path``; raises KeyFileError saying why not."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    key, encrypted = _try_classes(path, None)
    if key is not None:
        return key
    if not encrypted:
        raise KeyFileError(f"cannot load key file {path}: not a supported private key")
    if prompt is None:
        raise KeyFileError(
            f"key file {path} is encrypted and no passphrase can be asked here; "
            "add it to ssh-agent with `ssh-add`"
        )
    for _ in range(PASSPHRASE_ATTEMPTS):
        key, _ = _try_classes(path, prompt(path))
        if key is not None:
            return key
    raise KeyFileError(
        f"cannot decrypt key file {path}: wrong passphrase "
        f"({PASSPHRASE_ATTEMPTS} attempts)"
    )


def _try_classes(
    path: str, passphrase: str | None
) -> tuple[paramiko.PKey | None, bool]:
    """(key, False) when a class reads it; (None, True) if it needs a passphrase."""
    encrypted = False
    for key_class in _key_classes():
        try:
            return key_class.from_private_key_file(path, password=passphrase), False
        except paramiko.PasswordRequiredException:
            encrypted = True
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue  # another type, or a wrong passphrase
    return None, encrypted


def public_blob(path: str) -> bytes | None:
    """The public key of a key file, from ``path.pub``; None if unavailable."""
    try:
        with open(path + ".pub") as stream:
            fields = stream.read().split()
        return PublicBlob.from_string(" ".join(fields[:2])).key_blob
    except Exception:  # missing or unreadable: the key is simply not matched
        return None


@dataclass(frozen=True)
class Identity:
    """A key to offer, and where it came from (for error messages)."""

    key: paramiko.PKey
    source: str


class KeyRing:
    """Key files loaded at most once, shared by sessions in several threads."""

    def __init__(
        self, keyfile: str | None = None, prompt: PassphrasePrompt | None = None
    ) -> None:
        self.keyfile = os.path.expanduser(keyfile) if keyfile else None
        self._prompt = prompt
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey] = {}
        self._skipped: dict[str, str] = {}

    def explicit(self) -> list[Identity]:
        """The key given on the command line; raises KeyFileError."""
        if self.keyfile is None:
            return []
        return [Identity(self._load(self.keyfile, required=True), self.keyfile)]

    def from_files(self, paths: Iterable[str]) -> list[Identity]:
        """The keys of ``paths`` that exist and load; others are skipped."""
        found = []
        for path in paths:
            key = self._load(path, required=False)
            if key is not None:
                found.append(Identity(key, path))
        return found

    def skipped(self) -> dict[str, str]:
        """Key files that could not be used, with the reason."""
        with self._lock:
            return dict(self._skipped)

    def preload(self, paths: Iterable[str], agent_blobs: set[bytes]) -> None:
        """Load the explicit key and ``paths`` now, prompting in this thread.

        A key whose public half the agent holds is left to the agent.
        """
        self.explicit()
        for path in paths:
            if os.path.exists(path) and public_blob(path) not in agent_blobs:
                self._load(path, required=False)

    def _load(self, path: str, required: bool) -> paramiko.PKey | None:
        with self._lock:
            if path in self._keys:
                return self._keys[path]
            if path in self._skipped and not required:
                return None
            if not required and not os.path.exists(path):
                return None
            try:
                key = load_key_file(path, self._prompt)
            except KeyFileError as exc:
                if required:
                    raise
                logger.debug("skipped key file=%s reason=%s", path, exc)
                self._skipped[path] = str(exc)
                return None
            self._keys[path] = key
            return key


class AgentKeys:
    """The ssh-agent's keys (from SSH_AUTH_SOCK), for one session."""

    def __init__(self) -> None:
        self._agent: paramiko.Agent | None = None

    def identities(self) -> list[Identity]:
        if not os.environ.get("SSH_AUTH_SOCK"):
            return []
        try:
            self._agent = paramiko.Agent()
            keys = self._agent.get_keys()
        except Exception as exc:  # a dead agent socket is no agent
            logger.debug("ignored ssh-agent error=%s", exc)
            return []
        return [Identity(key, "ssh-agent") for key in keys]

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None


def agent_blobs() -> set[bytes]:
    """The public keys the agent holds (empty without an agent)."""
    agent = AgentKeys()
    try:
        return {identity.key.asbytes() for identity in agent.identities()}
    finally:
        agent.close()
