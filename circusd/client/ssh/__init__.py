"""circusctl over SSH: one paramiko connection per host carries the ZeroMQ
connections to the daemon's tcp and ipc endpoints, with known_hosts
checking and no local TCP listener. See docs/remote.md.

The errors and ``parse_target`` are light; everything that needs paramiko
(which takes a fifth of a second to import) is loaded on first use, so that
circusctl without ``--ssh`` starts as fast as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from circusd.client.ssh.errors import (
    AuthenticationFailed,
    ChannelRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    InvalidTarget,
    KeyFileError,
    NoTerminal,
    SSHError,
    SSHUnreachable,
)
from circusd.client.ssh.target import (
    HostSettings,
    SSHTarget,
    load_config,
    parse_target,
    resolve,
    resolve_chain,
)

if TYPE_CHECKING:
    from circusd.client.ssh.keys import KeyRing, PassphrasePrompt, agent_blobs
    from circusd.client.ssh.session import SSHOptions, SSHSession

_LAZY = {
    "KeyRing": "circusd.client.ssh.keys",
    "PassphrasePrompt": "circusd.client.ssh.keys",
    "agent_blobs": "circusd.client.ssh.keys",
    "SSHOptions": "circusd.client.ssh.session",
    "SSHSession": "circusd.client.ssh.session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AuthenticationFailed",
    "ChannelRefused",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "HostSettings",
    "InvalidTarget",
    "KeyFileError",
    "KeyRing",
    "NoTerminal",
    "PassphrasePrompt",
    "SSHError",
    "SSHOptions",
    "SSHSession",
    "SSHTarget",
    "SSHUnreachable",
    "agent_blobs",
    "load_config",
    "parse_target",
    "resolve",
    "resolve_chain",
]
