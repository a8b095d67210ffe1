"""``httpd = true``: the web console as a watcher of its own.

circusd binds the console's port itself (so it may be below 1024) as a
socket named ``circushttpd`` and runs ``python -m circusd.web serve`` as a
singleton watcher of the same name, under ``httpd_user``. The console gets
its settings in its environment (``CIRCUSHTTPD_*``), readable only by that
user and root, not on its command line; none of them is a secret (the
session key lives only in the console's memory, and the password hashes
and TLS key stay in files the console reads).

The checks here refuse a setup that would be unsafe or useless: a console
running as root, plain HTTP beyond loopback without a stated reverse proxy,
half a TLS setup, or a user that circusd would refuse everything.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Mapping

from circusd.config import checks
from circusd.config.model import Config, SocketConfig, WatcherConfig
from circusd.errors import ConfigError
from circusd.users import group_id, groups_of

NAME = "circushttpd"
USERS_FILE = "circushttpd.users"


def _refuse(config: Config, key: str, message: str) -> ConfigError:
    return ConfigError(message, path=config.path, section="circus", key=key)


def with_console(config: Config, environ: Mapping[str, str]) -> Config:
    """``config`` with the console's socket and watcher when ``httpd`` is on."""
    circus = config.circus
    if not circus.httpd:
        return config
    entry = _user_entry(config)
    _check_listening(config)
    _check_rights(config, entry)
    for kind, names in (("watcher", config.watchers), ("socket", config.sockets)):
        if any(item.name.lower() == NAME for item in names):
            raise _refuse(
                config,
                "httpd",
                f"httpd = true adds a {kind} named {NAME}, and the config "
                f"already has one; rename [{kind}:{NAME}]",
            )
    source = f"{config.path}: [circus] httpd"
    family = "AF_INET6" if ":" in circus.httpd_host else "AF_INET"
    host = circus.httpd_host.removeprefix("[").removesuffix("]")
    sock = SocketConfig(
        name=NAME, host=host, port=circus.httpd_port, family=family, source=source
    )
    watcher = WatcherConfig(
        name=NAME,
        cmd=sys.executable,
        # -P: not the working directory first on the module path
        args=("-P", "-m", "circusd.web", "serve", "--fd", f"$(circus.sockets.{NAME})"),
        uid=entry.pw_name,
        singleton=True,
        graceful_timeout=5.0,
        no_new_privs=True,
        env=console_environment(config, environ),
        source=source,
    )
    return Config(
        circus=circus,
        watchers=tuple(sorted((*config.watchers, watcher), key=lambda w: w.name)),
        sockets=tuple(sorted((*config.sockets, sock), key=lambda s: s.name)),
        plugins=config.plugins,
        path=config.path,
        environ=config.environ,
    )


def console_environment(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    circus = config.circus
    directory = os.path.dirname(config.path or "") or os.getcwd()
    settings = {
        "ENDPOINT": circus.endpoint,
        "PUBSUB_ENDPOINT": circus.pubsub_endpoint,
        "STATS_ENDPOINT": circus.stats_endpoint if circus.statsd else None,
        "USERS": circus.httpd_users or os.path.join(directory, USERS_FILE),
        "CERTFILE": circus.httpd_certfile,
        "KEYFILE": circus.httpd_keyfile,
        "TRUSTED_PROXIES": circus.httpd_trusted_proxies,
    }
    env = {f"CIRCUSHTTPD_{key}": value for key, value in settings.items() if value}
    if environ.get("PYTHONPATH"):
        # circusd found its own package there: so must the console.
        env["PYTHONPATH"] = environ["PYTHONPATH"]
    return env


def _user_entry(config: Config) -> pwd.struct_passwd:
    user = config.circus.httpd_user
    if user is None:
        raise _refuse(
            config,
            "httpd_user",
            "httpd = true needs httpd_user: the unprivileged user the web "
            "console runs as",
        )
    try:
        entry = pwd.getpwuid(int(user)) if str(user).isdecimal() else pwd.getpwnam(user)
    except KeyError:
        raise _refuse(config, "httpd_user", f"unknown user {user!r}") from None
    if entry.pw_uid == 0:
        raise _refuse(
            config,
            "httpd_user",
            f"httpd_user {user!r} is root: the console would give every web "
            "user root's rights over circusd; use an unprivileged user",
        )
    return entry


def _check_listening(config: Config) -> None:
    circus = config.circus
    if (circus.httpd_certfile is None) != (circus.httpd_keyfile is None):
        raise _refuse(
            config,
            "httpd_certfile" if circus.httpd_certfile is None else "httpd_keyfile",
            "TLS needs both httpd_certfile and httpd_keyfile",
        )
    tls = circus.httpd_certfile is not None
    if checks.is_loopback(circus.httpd_host) or tls or circus.httpd_trusted_proxies:
        return
    raise _refuse(
        config,
        "httpd_host",
        f"httpd_host {circus.httpd_host} is reachable from other hosts: plain "
        "HTTP there needs a reverse proxy stated in httpd_trusted_proxies, or "
        "set httpd_certfile and httpd_keyfile for TLS, or use 127.0.0.1",
    )


def _check_rights(config: Config, entry: pwd.struct_passwd) -> None:
    """The console can do only what circusd lets its user do: something."""
    circus = config.circus
    owner = circus.endpoint_owner
    if owner is not None:
        owner_uid = int(owner) if str(owner).isdecimal() else pwd.getpwnam(owner).pw_uid
        if owner_uid == entry.pw_uid:
            return
    if circus.readonly_group is not None:
        if group_id(circus.readonly_group) in groups_of(entry.pw_uid, entry.pw_gid):
            return
    raise _refuse(
        config,
        "httpd_user",
        f"circusd would refuse httpd_user {entry.pw_name} everything: make it "
        "the endpoint_owner (to act), or a member of readonly_group (to look)",
    )
