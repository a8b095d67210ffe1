"""circusctl over SSH: one paramiko connection per host carries the ZeroMQ
connections to the daemon's tcp and ipc endpoints, with known_hosts
checking and no local TCP listener. See docs/remote.md.
"""

from circusd.client.ssh.errors import (
    AuthenticationFailed,
    ChannelRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    InvalidTarget,
    KeyFileError,
    SSHError,
    SSHUnreachable,
)
from circusd.client.ssh.keys import KeyRing, PassphrasePrompt, agent_blobs
from circusd.client.ssh.session import SSHOptions, SSHSession
from circusd.client.ssh.target import (
    HostSettings,
    SSHTarget,
    load_config,
    parse_target,
    resolve,
    resolve_chain,
)

__all__ = [
    "AuthenticationFailed",
    "ChannelRefused",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "HostSettings",
    "InvalidTarget",
    "KeyFileError",
    "KeyRing",
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
