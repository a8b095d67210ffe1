"""Failures of the SSH hop, each with a one-line message that names the host."""

from __future__ import annotations

from circusd.client.errors import CallError, DaemonUnreachable


class SSHError(CallError):
    """The SSH connection could not be made or used."""


class InvalidTarget(SSHError):
    """A target, hosts file or ssh_config entry that cannot be used as written."""


class SSHUnreachable(SSHError):
    """No SSH server answered: resolution, connection or handshake failed."""


class HostKeyUnknown(SSHError):
    """The server's host key is in no known_hosts file."""


class HostKeyMismatch(SSHError):
    """known_hosts holds another key for this host: changed, or intercepted."""


class AuthenticationFailed(SSHError):
    """The server accepted none of the keys offered."""


class NoTerminal(SSHError):
    """There is no terminal to ask a password on."""


class KeyFileError(SSHError):
    """A private key file cannot be read or decrypted."""


class ChannelRefused(DaemonUnreachable):
    """The SSH server could not connect to the daemon's endpoint."""
