"""Where to connect: a ``[user@]host[:port]`` target, completed by ssh_config.

``resolve`` turns a target into HostSettings the way OpenSSH reads
``~/.ssh/config``: Host aliases, HostName, User, Port, IdentityFile,
IdentitiesOnly, ProxyJump, ProxyCommand, the known_hosts files,
StrictHostKeyChecking, HashKnownHosts, HostKeyAlias and ConnectTimeout. A
user or port written in the target wins over the config, as with ``ssh``,
also in ProxyCommand's %r and %p.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from circusd.client.ssh.errors import InvalidTarget

if TYPE_CHECKING:
    import paramiko

SSH_PORT = 22
# What circusctl can do, in OpenSSH's default order (it also has
# gssapi-with-mic and hostbased first, which circusctl does not offer).
AUTH_METHODS = ("publickey", "keyboard-interactive", "password")
INTERACTIVE = ("keyboard-interactive", "password")
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ed25519")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
MAX_JUMPS = 8


@dataclass(frozen=True)
class SSHTarget:
    """A target as written: ``host``, ``user@host``, ``host:port``, ``[::1]:22``."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"


def parse_target(text: str) -> SSHTarget:
    """Read ``[user@]host[:port]``; raises InvalidTarget naming what is wrong."""
    raw = text.strip()
    user, at, rest = raw.rpartition("@")
    if at and not user:
        raise InvalidTarget(f"invalid ssh target {text!r}: empty user before '@'")
    host, port_text = _split_port(rest)
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise InvalidTarget(f"invalid ssh target {text!r}: expected [USER@]HOST[:PORT]")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise InvalidTarget(
                f"invalid ssh target {text!r}: port must be between 1 and 65535"
            )
        port = int(port_text)
    return SSHTarget(host, user or None, port)


def _split_port(rest: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            return "", None
        return host, tail[1:] if tail else None
    if rest.count(":") == 1:
        host, _, port = rest.partition(":")
        return host, port
    return rest, None  # a bare IPv6 address has no port


@dataclass(frozen=True)
class HostSettings:
    """Everything needed to reach one SSH server, after ssh_config."""

    target: SSHTarget
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    jumps: tuple[SSHTarget, ...]
    known_hosts_files: tuple[str, ...]  # new keys are added to the first
    global_known_hosts_files: tuple[str, ...]
    host_key_alias: str | None
    accept_new: bool
    hash_known_hosts: bool
    connect_timeout: float | None
    proxy_command: str | None = None  # with its tokens expanded
    auth_methods: tuple[str, ...] = AUTH_METHODS  # in the order to try them
    password_prompts: int = 3  # NumberOfPasswordPrompts

    @property
    def known_hosts_name(self) -> str:
        """The name of this host in known_hosts: ``host`` or ``[host]:port``."""
        name = self.host_key_alias or self.hostname
        return name if self.port == SSH_PORT else f"[{name}]:{self.port}"

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"


def new_config() -> paramiko.SSHConfig:
    """An empty paramiko SSHConfig that leaves ProxyCommand's tokens to
    ``resolve``: paramiko would take %p and %r from the config alone, not
    from the target as OpenSSH does."""
    import paramiko  # only here: it is slow to import

    config = paramiko.SSHConfig()
    config.TOKENS_BY_CONFIG_KEY = {
        **getattr(config, "TOKENS_BY_CONFIG_KEY", {}),
        "proxycommand": [],
    }
    return config


def load_config(path: str | None) -> paramiko.SSHConfig:
    """The ssh_config at ``path``, or ``~/.ssh/config`` (empty if missing).

    An explicit ``path`` that cannot be read raises InvalidTarget.
    """
    config = new_config()
    chosen = os.path.expanduser(path or "~/.ssh/config")
    try:
        with open(chosen) as stream:
            config.parse(stream)
    except FileNotFoundError:
        if path is not None:
            raise InvalidTarget(f"ssh config {chosen} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTarget(f"cannot read ssh config {chosen}: {exc}") from None
    except Exception as exc:  # paramiko's parser raises several kinds
        raise InvalidTarget(f"invalid ssh config {chosen}: {exc}") from None
    return config


def resolve(
    target: SSHTarget, config: paramiko.SSHConfig, accept_new: bool = False
) -> HostSettings:
    """The HostSettings for ``target``; raises InvalidTarget."""
    try:
        entry = config.lookup(target.host)
    except Exception as exc:  # Match exec and token errors come from paramiko
        raise InvalidTarget(f"ssh config for {target.host}: {exc}") from None
    port = target.port or _integer(entry.get("port"), SSH_PORT, "Port", target)
    strict = str(entry.get("stricthostkeychecking", "yes")).lower()
    hostname = str(entry.get("hostname", target.host))
    user = target.user or str(entry.get("user") or getpass.getuser())
    jumps = _jumps(entry.get("proxyjump"), target)
    proxy_command = entry.get("proxycommand")
    if proxy_command is not None and str(proxy_command).lower() != "none":
        if jumps:
            # OpenSSH takes whichever comes first in the file; paramiko's
            # reader does not keep that order.
            raise InvalidTarget(
                f"ssh config for {target.host} sets both ProxyJump and "
                "ProxyCommand; keep one"
            )
        values = {"%": "%", "h": hostname, "n": target.host, "p": str(port), "r": user}
        where = f"{target.host} ProxyCommand"
        proxy_command = expand_tokens(str(proxy_command), values, where)
    else:
        proxy_command = None
    return HostSettings(
        target=target,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=_identity_files(entry.get("identityfile")),
        identities_only=_yes(entry.get("identitiesonly")),
        jumps=jumps,
        known_hosts_files=_paths(entry.get("userknownhostsfile"), DEFAULT_KNOWN_HOSTS),
        global_known_hosts_files=_paths(
            entry.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS
        ),
        host_key_alias=str(entry["hostkeyalias"]) if "hostkeyalias" in entry else None,
        # OpenSSH's "no" accepts even changed keys; here it only accepts new ones.
        accept_new=accept_new or strict in ("accept-new", "no", "off"),
        hash_known_hosts=_yes(entry.get("hashknownhosts")),
        connect_timeout=_timeout(entry.get("connecttimeout"), target),
        proxy_command=proxy_command,
        auth_methods=_auth_methods(entry),
        password_prompts=_count(entry.get("numberofpasswordprompts"), 3, target),
    )


def expand_tokens(text: str, values: dict[str, str], where: str) -> str:
    """``text`` with each ``%X`` replaced by ``values[X]``, as OpenSSH's
    percent_expand does; an unknown or unfinished token raises InvalidTarget."""

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in values:
            shown = f"%{token}" if token else "a lone '%' at the end"
            raise InvalidTarget(f"ssh config for {where}: unknown token {shown}")
        return values[token]

    return re.sub(r"%(.?)", value, text, flags=re.DOTALL)


def resolve_chain(
    target: SSHTarget, config: paramiko.SSHConfig, accept_new: bool = False
) -> list[HostSettings]:
    """The hosts to connect through, in order, ending with ``target`` itself.

    Each ProxyJump hop is resolved with its own config entry, including its
    own ProxyJump; a loop or a chain longer than 8 raises InvalidTarget.
    """
    return _chain(target, config, accept_new, ())


def _chain(
    target: SSHTarget,
    config: paramiko.SSHConfig,
    accept_new: bool,
    seen: tuple[SSHTarget, ...],
) -> list[HostSettings]:
    if target in seen or len(seen) > MAX_JUMPS:
        raise InvalidTarget(f"ProxyJump for {seen[0]} loops or is too long")
    settings = resolve(target, config, accept_new)
    chain: list[HostSettings] = []
    for hop in settings.jumps:
        if not chain:
            chain = _chain(hop, config, accept_new, (*seen, target))
        else:  # later hops are reached through the earlier ones
            chain.append(resolve(hop, config, accept_new))
    return [*chain, settings]


def _jumps(value: object, target: SSHTarget) -> tuple[SSHTarget, ...]:
    text = str(value or "none").strip()
    if text.lower() == "none":
        return ()
    hops = []
    for part in text.split(","):
        spec = part.strip().removeprefix("ssh://")
        try:
            hops.append(parse_target(spec))
        except InvalidTarget:
            raise InvalidTarget(
                f"ssh config for {target.host}: invalid ProxyJump {part.strip()!r}"
            ) from None
    return tuple(hops)


def _auth_methods(entry: dict[str, object]) -> tuple[str, ...]:
    """The methods to try, in order: PreferredAuthentications, less those
    turned off (PubkeyAuthentication, KbdInteractiveAuthentication or its old
    name ChallengeResponseAuthentication, PasswordAuthentication) and the
    ones that ask questions under BatchMode."""
    preferred = str(entry.get("preferredauthentications") or ",".join(AUTH_METHODS))
    off = {
        "publickey": _no(entry.get("pubkeyauthentication")),
        "keyboard-interactive": _no(entry.get("kbdinteractiveauthentication"))
        or _no(entry.get("challengeresponseauthentication")),
        "password": _no(entry.get("passwordauthentication")),
    }
    batch = _yes(entry.get("batchmode"))
    methods = [name.strip() for name in preferred.split(",")]
    return tuple(
        dict.fromkeys(
            name
            for name in methods
            if name in AUTH_METHODS
            and not off[name]
            and not (batch and name in INTERACTIVE)
        )
    )


def _identity_files(value: object) -> tuple[str, ...]:
    if value:
        listed = value if isinstance(value, list) else [value]
        return tuple(os.path.expanduser(str(path)) for path in listed)
    home = os.path.expanduser("~/.ssh")
    return tuple(os.path.join(home, name) for name in DEFAULT_IDENTITIES)


def _paths(value: object, default: tuple[str, ...]) -> tuple[str, ...]:
    words = str(value).split() if value else list(default)
    return tuple(os.path.expanduser(word) for word in words if word != "none")


def _yes(value: object) -> bool:
    return str(value or "no").lower() in ("yes", "true")


def _no(value: object) -> bool:
    return str(value or "yes").lower() in ("no", "false")


def _count(value: object, default: int, target: SSHTarget) -> int:
    if value is None:
        return default
    text = str(value)
    if not text.isdigit():
        raise InvalidTarget(
            f"ssh config for {target.host}: invalid NumberOfPasswordPrompts {text!r}"
        )
    return int(text)


def _integer(value: object, default: int, key: str, target: SSHTarget) -> int:
    if value is None:
        return default
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidTarget(f"ssh config for {target.host}: invalid {key} {text!r}")
    return int(text)


def _timeout(value: object, target: SSHTarget) -> float | None:
    if value is None:
        return None
    text = str(value)
    if not text.isdigit() or int(text) == 0:
        raise InvalidTarget(
            f"ssh config for {target.host}: invalid ConnectTimeout {text!r}"
        )
    return float(text)
