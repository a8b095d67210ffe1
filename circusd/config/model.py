"""The configuration model: what a loaded config file means.

Frozen dataclasses, built only by the loader (from a file) or by the control
commands ``add`` and ``set`` (through the same option table in
``circusd.config.options``). Nothing here touches the system.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _empty() -> Any:
    return field(default_factory=dict)


@dataclass(frozen=True)
class Hook:
    target: str  # dotted path of a Python callable, from the config file only
    ignore_errors: bool = False


@dataclass(frozen=True)
class WatcherConfig:
    name: str
    cmd: str
    args: str | tuple[str, ...] = ""
    executable: str | None = None
    shell: bool = False
    shell_args: str | None = None
    numprocesses: int = 1
    warmup_delay: float = 0.0
    working_dir: str | None = None
    uid: str | int | None = None
    gid: str | int | None = None
    umask: int | None = None
    env: Mapping[str, str] = _empty()
    copy_env: bool = False
    copy_path: bool = False
    virtualenv: str | None = None
    virtualenv_py_ver: str | None = None
    respawn: bool = True
    autostart: bool = True
    on_demand: bool = False
    priority: int = 0
    singleton: bool = False
    graceful_timeout: float = 30.0
    stop_signal: int = signal.SIGTERM
    stop_children: bool = False
    max_retry: int = 5
    max_age: int = 0
    max_age_variance: int = 30
    send_hup: bool = False
    use_sockets: bool = False
    close_child_stdin: bool = True
    close_child_stdout: bool = False
    close_child_stderr: bool = False
    stdin_socket: str | None = None
    no_new_privs: bool = False
    pdeathsig: int | None = None
    capability_bounding_set: tuple[str, ...] | None = None  # None: keep all
    check_delay: float | None = None  # accepted, never a reaction time
    check_flapping: bool = True  # accepted for compatibility, unused
    rlimits: Mapping[str, tuple[int, int]] = _empty()
    stdout_stream: Mapping[str, str] = _empty()
    stderr_stream: Mapping[str, str] = _empty()
    hooks: Mapping[str, Hook] = _empty()
    extra: Mapping[str, str] = _empty()  # free-form dotted keys (plugin settings)
    source: str = ""  # "FILE:LINE" of the section, for messages

    def replace(self, **changes: Any) -> WatcherConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SocketConfig:
    name: str
    host: str = "localhost"
    port: int = 8080
    family: str = "AF_INET"
    type: str = "SOCK_STREAM"
    proto: str | None = None
    backlog: int = 2048
    path: str | None = None
    umask: int = 0o077
    replace: bool = False
    so_reuseport: bool = False
    blocking: bool = False
    interface: str | None = None
    source: str = ""


@dataclass(frozen=True)
class PluginConfig:
    name: str
    use: str
    options: Mapping[str, str] = _empty()  # every key but use, as text
    # Read from the same keys: the plugin's process (config/plugins.py).
    active: bool = True
    priority: int = 1
    uid: str | int | None = None
    gid: str | int | None = None
    max_retry: int = 5
    source: str = ""


@dataclass(frozen=True)
class CircusConfig:
    endpoint: str = "tcp://127.0.0.1:5555"
    endpoint_owner: str | None = None
    readonly_group: str | int | None = None
    insecure_tcp: bool = False
    curve_secret_key: str | None = None
    curve_keys_dir: str | None = None
    pubsub_endpoint: str = "tcp://127.0.0.1:5556"
    stats_endpoint: str | None = None
    multicast_endpoint: str | None = None  # off unless configured
    statsd: bool = False
    prometheus_endpoint: str | None = None  # HOST:PORT, loopback unless insecure_tcp
    check_delay: float = 5.0
    warmup_delay: float = 0.0
    httpd: bool = False
    httpd_host: str = "127.0.0.1"
    httpd_port: int = 8080
    httpd_user: str | None = None
    httpd_users: str | None = None
    httpd_certfile: str | None = None
    httpd_keyfile: str | None = None
    httpd_trusted_proxies: str | None = None
    debug: bool = False
    debug_gc: bool = False
    pidfile: str | None = None
    umask: int | None = None
    loglevel: str = "info"
    logoutput: str = "-"
    loggerconfig: str | None = None
    fqdn_prefix: str | None = None


@dataclass(frozen=True)
class Config:
    circus: CircusConfig = field(default_factory=CircusConfig)
    watchers: tuple[WatcherConfig, ...] = ()
    sockets: tuple[SocketConfig, ...] = ()
    plugins: tuple[PluginConfig, ...] = ()
    path: str | None = None  # the main file, absolute
    environ: Mapping[str, str] = _empty()  # [env] merged for interpolation
