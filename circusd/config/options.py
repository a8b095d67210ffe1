"""The option tables: every key a config section or ``set``/``add`` accepts.

One table per section kind. The loader, the ``add``/``set``/``get``/
``options`` commands and docs/configuration.md are all driven from here, so
an option exists in all of them or in none.
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from circusd.config import values as v
from circusd.config.model import Hook, WatcherConfig
from circusd.errors import ValueProblem


@dataclass(frozen=True)
class Option:
    name: str
    convert: v.Converter
    default: Any
    doc: str
    restarts: bool = False  # changing it with `set` restarts the processes


def optional_signum(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return v.signum(value)


def capabilities(value: Any) -> tuple[str, ...] | None:
    """Capability names (``cap_`` prefix and case optional), for a bounding set."""
    if value is None:
        return None
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(i, str) for i in value):
        items = list(value)
    else:
        raise ValueProblem(f"expected capability names, got {value!r}")
    names = []
    for item in items:
        name = item.strip().lower().removeprefix("cap_")
        if name not in CAPABILITY_NAMES:
            raise ValueProblem(f"unknown capability {item!r}")
        names.append(name)
    return tuple(dict.fromkeys(names))


# Linux capabilities by number (linux/capability.h), for bounding sets.
CAPABILITY_NAMES = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)


def _table(*options: Option) -> Mapping[str, Option]:
    return {option.name: option for option in options}


_MAX_PROCESSES = 10_000
_MAX_SECONDS = 10**7  # about 115 days

WATCHER_OPTIONS = _table(
    Option(
        "cmd",
        v.text,
        None,
        "The command to run (required). Split like a "
        "shell would, unless `shell` is set.",
        True,
    ),
    Option(
        "args",
        v.arguments,
        "",
        "Arguments appended to `cmd`: a string split like a shell would, or a list.",
        True,
    ),
    Option(
        "executable",
        v.optional_text,
        None,
        "The program to execute; "
        "`cmd`'s first word then only names the process (argv[0]).",
        True,
    ),
    Option("shell", v.boolean, False, "Run `cmd` through `/bin/sh -c`.", True),
    Option(
        "shell_args",
        v.optional_text,
        None,
        "Extra arguments after the command when `shell` is set.",
        True,
    ),
    Option(
        "numprocesses",
        v.bounded(0, _MAX_PROCESSES),
        1,
        "How many processes to keep running.",
    ),
    Option(
        "warmup_delay",
        v.number,
        0.0,
        "Seconds to wait between starting two processes of this watcher.",
    ),
    Option(
        "working_dir",
        v.optional_text,
        None,
        "Directory the processes start in. Default: circusd's own working directory.",
        True,
    ),
    Option(
        "uid",
        v.ident,
        None,
        "User to run the processes as (name or "
        "number; 0 means root). Sets HOME, USER, LOGNAME and SHELL.",
        True,
    ),
    Option(
        "gid",
        v.ident,
        None,
        "Group to run the processes as. Default: the primary group of `uid`.",
        True,
    ),
    Option(
        "umask",
        v.octal,
        None,
        "The processes' umask, in octal (022). Default: circusd's umask.",
        True,
    ),
    Option(
        "env",
        v.environment,
        {},
        "Environment variables (normally given in `[env:NAME]` sections).",
        True,
    ),
    Option(
        "copy_env",
        v.boolean,
        False,
        "Start from circusd's own environment instead of an empty one.",
        True,
    ),
    Option(
        "copy_path",
        v.boolean,
        False,
        "Put circusd's `sys.path` into PYTHONPATH (needs `copy_env`).",
        True,
    ),
    Option(
        "virtualenv",
        v.optional_text,
        None,
        "A virtualenv whose bin/ is "
        "put first in PATH and whose site-packages go in PYTHONPATH.",
        True,
    ),
    Option(
        "virtualenv_py_ver",
        v.optional_text,
        None,
        "The Python version of `virtualenv` (python3.X); found by itself when unset.",
        True,
    ),
    Option("respawn", v.boolean, True, "Replace processes that exit."),
    Option(
        "autostart",
        v.boolean,
        True,
        "Start the watcher when circusd starts and on `start` without a name.",
    ),
    Option(
        "on_demand",
        v.boolean,
        False,
        "Start only when one of the watcher's sockets gets a connection.",
    ),
    Option(
        "priority",
        v.integer,
        0,
        "Start order, highest first; stop order is the reverse.",
    ),
    Option("singleton", v.boolean, False, "Never run more than one process."),
    Option(
        "graceful_timeout",
        v.number,
        30.0,
        "Seconds to wait after "
        "`stop_signal` before the whole process tree gets SIGKILL.",
    ),
    Option(
        "stop_signal",
        v.signum,
        signal.SIGTERM,
        "Signal that asks a process to stop (name or number).",
    ),
    Option(
        "stop_children",
        v.boolean,
        False,
        "Send `stop_signal` to the "
        "whole process tree, not only the process circusd started.",
    ),
    Option(
        "max_retry",
        v.bounded(-1, None),
        5,
        "How many times in a row a "
        "process may fail to start or die young before the watcher is "
        "marked failed; -1 means retry forever (with backoff).",
    ),
    Option(
        "max_age",
        v.bounded(0, _MAX_SECONDS),
        0,
        "Restart a process after this many seconds (0 = never).",
    ),
    Option(
        "max_age_variance",
        v.bounded(0, _MAX_SECONDS),
        30,
        "A random 0..N seconds added to `max_age`, drawn once per process.",
    ),
    Option(
        "send_hup",
        v.boolean,
        False,
        "`reload` sends SIGHUP instead of replacing the processes.",
    ),
    Option(
        "use_sockets",
        v.boolean,
        False,
        "Pass every `[socket:*]` to the "
        "processes, not only those that `cmd` or `args` name.",
        True,
    ),
    Option(
        "close_child_stdin",
        v.boolean,
        True,
        "Give the processes /dev/null as stdin.",
        True,
    ),
    Option(
        "close_child_stdout",
        v.boolean,
        False,
        "Send the processes' stdout to /dev/null.",
        True,
    ),
    Option(
        "close_child_stderr",
        v.boolean,
        False,
        "Send the processes' stderr to /dev/null.",
        True,
    ),
    Option(
        "stdin_socket",
        v.optional_text,
        None,
        "Name of a `[socket:*]` to put on the processes' stdin.",
        True,
    ),
    Option(
        "no_new_privs",
        v.boolean,
        False,
        "Set the no-new-privileges bit: setuid programs and file "
        "capabilities grant nothing to the processes.",
        True,
    ),
    Option(
        "pdeathsig",
        optional_signum,
        None,
        "Signal the processes get when circusd dies (name or number).",
        True,
    ),
    Option(
        "capability_bounding_set",
        capabilities,
        None,
        "Capabilities the processes may ever hold, as names separated by "
        "spaces or commas (`net_bind_service`); empty drops them all. "
        "Default: keep circusd's.",
        True,
    ),
    Option(
        "check_delay",
        v.number,
        None,
        "Accepted for compatibility; circusd reacts to exits at once and never polls.",
    ),
    Option(
        "check_flapping",
        v.boolean,
        True,
        "Accepted for compatibility; "
        "crash loops are always handled by the restart policy.",
    ),
)

# Prefixed keys: stdout_stream.X, stderr_stream.X, hooks.NAME, rlimit_NAME.
STREAM_KEYS = (
    "class",
    "filename",
    "max_bytes",
    "backup_count",
    "time_format",
    "rotate_when",
    "rotate_interval",
    "utc",
    "color",
    "refresh_time",
    "priority",
    "facility",
)
# Syslog's names for priorities and facilities, each numbered by its place.
SYSLOG_PRIORITIES = (
    *("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"),
)
SYSLOG_FACILITIES = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news"),
    *("uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "clock"),
    *(f"local{number}" for number in range(8)),
)
STREAM_COLORS = ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
ROTATE_WHEN = ("S", "M", "H", "D", "MIDNIGHT", *(f"W{day}" for day in range(7)))


def syslog_level(value: str, names: tuple[str, ...], what: str) -> int:
    """A syslog priority or facility, by name or number."""
    text = value.strip().lower()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    if text in names:
        return names.index(text)
    raise ValueProblem(f"unknown {what} {value!r}; use one of {', '.join(names)}")


# The built-in stream classes and what each does, for the generated docs.
STREAM_CLASSES = {
    "FileStream": "Appends the output to `filename`, byte for byte. With "
    "`max_bytes`, renames it to `filename.1` (keeping `backup_count` old "
    "files, default 5) when it reaches that size.",
    "WatchedFileStream": "Appends to `filename` and never rotates it itself "
    "(for logrotate).",
    "TimedRotatingFileStream": "Appends to `filename`; every `rotate_interval` "
    "(default 1) units of `rotate_when` (S, M, H (default), D, MIDNIGHT, or "
    "W0 to W6 for a weekday, 0 being Monday) renames it to `filename.TIME`, "
    "TIME being when its period began, in local time unless `utc`. Keeps "
    "`backup_count` old files (default 5).",
    "StdoutStream": "circusd's own stdout (stderr for `stderr_stream`), byte for byte.",
    "FancyStdoutStream": "circusd's own stdout (or stderr), each line as "
    "`TIME [WATCHER:PID] LINE`, TIME by `time_format` (default "
    "`%Y-%m-%d %H:%M:%S`), in `color` if set (red, green, yellow, blue, "
    "magenta, cyan or white).",
    "JournalStream": "Each line an entry in the systemd journal, through its "
    "native protocol: SYSLOG_IDENTIFIER is the watcher's name, SYSLOG_PID and "
    "OBJECT_PID the process's pid, PRIORITY `priority` (default info for "
    "stdout, err for stderr), SYSLOG_FACILITY `facility` (default daemon); "
    "CIRCUSD_WATCHER and CIRCUSD_STREAM say where it came from. "
    "`journalctl -t WATCHER` shows it.",
    "SyslogStream": "Each line a message on /dev/log in the form syslog(3) "
    "uses (RFC 3164: `<PRI>Mmm dd hh:mm:ss WATCHER[PID]: LINE`, local "
    "time), with `priority` and `facility` as for JournalStream.",
}
HOOK_NAMES = (
    "before_start",
    "after_start",
    "before_spawn",
    "after_spawn",
    "before_stop",
    "after_stop",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
    "extended_stats",
)
RLIMIT_NAMES = tuple(
    name[len("RLIMIT_") :].lower()
    for name in dir(__import__("resource"))
    if name.startswith("RLIMIT_")
)

SOCKET_OPTIONS = _table(
    Option("host", v.text, "localhost", "Address to bind."),
    Option("port", v.bounded(0, 65535), 8080, "TCP or UDP port (0 picks one)."),
    Option("family", v.text, "AF_INET", "AF_INET, AF_INET6 or AF_UNIX."),
    Option(
        "type",
        v.text,
        "SOCK_STREAM",
        "SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_RAW or SOCK_RDM.",
    ),
    Option("proto", v.optional_text, None, "Protocol name (for example tcp)."),
    Option("backlog", v.bounded(0, 65535), 2048, "Listen backlog."),
    Option("path", v.optional_text, None, "Path of a unix socket (implies AF_UNIX)."),
    Option(
        "umask",
        v.octal,
        0o077,
        "Umask for a unix socket file, in octal. "
        "The default 077 makes it 0700 (Circus read this as decimal).",
    ),
    Option("replace", v.boolean, False, "Remove an existing file at `path` first."),
    Option(
        "so_reuseport",
        v.boolean,
        False,
        "Give each process its own SO_REUSEPORT socket bound to the same address.",
    ),
    Option("blocking", v.boolean, False, "Leave the socket in blocking mode."),
    Option(
        "interface",
        v.optional_text,
        None,
        "Bind to this network interface (SO_BINDTODEVICE).",
    ),
)

CIRCUS_OPTIONS = _table(
    Option(
        "endpoint",
        v.text,
        "tcp://127.0.0.1:5555",
        "Control endpoint (ZeroMQ ROUTER): tcp://HOST:PORT or ipc://PATH.",
    ),
    Option(
        "endpoint_owner",
        v.optional_text,
        None,
        "User (name or number) that owns the ipc endpoints, may read, start, "
        "stop and signal every watcher, and may add and change watchers "
        "that run as itself (see docs/security.md).",
    ),
    Option(
        "readonly_group",
        v.ident,
        None,
        "Group (name or number) whose members may use the read-only "
        "commands; it also becomes the group of the ipc endpoints (mode 0660).",
    ),
    Option(
        "insecure_tcp",
        v.boolean,
        False,
        "Allow tcp endpoints beyond loopback without CURVE. Callers there "
        "cannot be identified and may do everything, as with Circus.",
    ),
    Option(
        "curve_secret_key",
        v.optional_text,
        None,
        "The control endpoint's CURVE certificate with its secret key "
        "(made by zmq.auth.create_certificates; not readable by others). "
        "Turns CURVE on for the control endpoint.",
    ),
    Option(
        "curve_keys_dir",
        v.optional_text,
        None,
        "Directory of client public certificates, `USER.key` or "
        "`USER@LABEL.key`: a client holding the key acts as USER.",
    ),
    Option(
        "pubsub_endpoint",
        v.text,
        "tcp://127.0.0.1:5556",
        "Event endpoint (ZeroMQ PUB).",
    ),
    Option(
        "stats_endpoint",
        v.optional_text,
        None,
        "Statistics endpoint (ZeroMQ PUB), served while `statsd` is true "
        "(see docs/monitoring.md). Default with `statsd = true`: "
        "tcp://127.0.0.1:5557.",
    ),
    Option(
        "multicast_endpoint",
        v.optional_text,
        None,
        "UDP autodiscovery; off unless set.",
    ),
    Option("statsd", v.boolean, False, "Publish statistics on `stats_endpoint`."),
    Option(
        "prometheus_endpoint",
        v.optional_text,
        None,
        "HOST:PORT where metrics are served in the Prometheus text format "
        "(`/metrics`); loopback only unless `insecure_tcp` is set. Off "
        "unless set (see docs/monitoring.md).",
    ),
    Option(
        "check_delay",
        v.number,
        5.0,
        "Accepted for compatibility; never a reaction time.",
    ),
    Option("warmup_delay", v.number, 0.0, "Seconds between starting two watchers."),
    Option(
        "httpd",
        v.boolean,
        False,
        "Run the web console, circushttpd, as a watcher named `circushttpd` "
        "(see docs/web.md); needs `httpd_user`.",
    ),
    Option(
        "httpd_host",
        v.text,
        "127.0.0.1",
        "Web console address. Beyond loopback it needs `httpd_certfile` and "
        "`httpd_keyfile`, or `httpd_trusted_proxies`.",
    ),
    Option("httpd_port", v.bounded(1, 65535), 8080, "Web console port."),
    Option(
        "httpd_user",
        v.optional_text,
        None,
        "The user the console runs as, never root. It has that user's rights "
        "over circusd: `endpoint_owner` to act, a member of `readonly_group` "
        "to look.",
    ),
    Option(
        "httpd_users",
        v.optional_text,
        None,
        "The console's password file, made with `circushttpd adduser`; "
        "default `circushttpd.users` beside the config file.",
    ),
    Option("httpd_certfile", v.optional_text, None, "The console's TLS certificate."),
    Option(
        "httpd_keyfile",
        v.optional_text,
        None,
        "The console's TLS private key (readable by `httpd_user`).",
    ),
    Option(
        "httpd_trusted_proxies",
        v.optional_text,
        None,
        "Reverse proxies (addresses or networks, comma-separated) whose "
        "X-Forwarded-* headers the console believes.",
    ),
    Option("debug", v.boolean, False, "Log at debug level."),
    Option("debug_gc", v.boolean, False, "Accepted for compatibility; ignored."),
    Option("pidfile", v.optional_text, None, "Write circusd's pid here."),
    Option("umask", v.octal, None, "circusd's own umask, in octal."),
    Option("loglevel", v.text, "info", "debug, info, warning, error or critical."),
    Option("logoutput", v.text, "-", "`-` (stderr), a file path, or syslog://."),
    Option("loggerconfig", v.optional_text, None, "Not supported; refused."),
    Option("fqdn_prefix", v.optional_text, None, "Accepted; unused."),
)


def _stream_text(value: Any) -> str:
    """Stream options are kept as text; clients send numbers and booleans too."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return v.text(value)


def closest(key: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` for a mistyped key, or nothing."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def watcher_keys() -> list[str]:
    return [
        *WATCHER_OPTIONS,
        "stdout_stream.*",
        "stderr_stream.*",
        "hooks.*",
        "rlimit_*",
    ]


def apply_watcher_option(
    changes: dict[str, Any],
    base: WatcherConfig,
    key: str,
    value: Any,
    free_streams: frozenset[str] = frozenset(),
) -> None:
    """Convert one ``key = value`` and record it in ``changes``.

    ``changes`` holds keyword arguments for ``WatcherConfig.replace``;
    prefixed keys are merged into their mapping. ``free_streams`` names the
    streams (``stdout_stream``) of a custom class, which takes any key.
    Raises ValueProblem.
    """
    option = WATCHER_OPTIONS.get(key)
    if option is not None:
        converted = option.convert(value)
        if key == "env":
            converted = dict(converted)
        changes[key] = converted
        return
    for stream in ("stdout_stream", "stderr_stream"):
        if key.startswith(stream + "."):
            sub = key[len(stream) + 1 :]
            free = stream in free_streams and sub.isidentifier()
            if sub not in STREAM_KEYS and not free:
                raise ValueProblem(
                    f"unknown stream option {sub!r}{closest(sub, STREAM_KEYS)}"
                )
            merged = dict(changes.get(stream, getattr(base, stream)))
            merged[sub] = _stream_text(value)
            changes[stream] = merged
            return
    if key in ("stdout_stream", "stderr_stream"):
        if not isinstance(value, dict) or "class" not in value:
            raise ValueProblem("expected an object with a 'class' key")
        for sub in value:
            if sub not in STREAM_KEYS:
                raise ValueProblem(
                    f"unknown stream option {sub!r}{closest(sub, STREAM_KEYS)}"
                )
        changes[key] = {k: _stream_text(val) for k, val in value.items()}
        return
    if key.startswith("hooks."):
        name = key[len("hooks.") :]
        if name not in HOOK_NAMES:
            raise ValueProblem(f"unknown hook {name!r}{closest(name, HOOK_NAMES)}")
        target, _, ignore = v.text(value).partition(",")
        hooks = dict(changes.get("hooks", base.hooks))
        hooks[name] = Hook(target.strip(), v.boolean(ignore.strip() or "false"))
        changes["hooks"] = hooks
        return
    if key.startswith("rlimit_"):
        name = key[len("rlimit_") :].lower()
        if name not in RLIMIT_NAMES:
            raise ValueProblem(
                f"unknown resource limit {name!r}{closest(name, RLIMIT_NAMES)}"
            )
        limits = dict(changes.get("rlimits", base.rlimits))
        limits[name] = v.rlimit(value)
        changes["rlimits"] = limits
        return
    if "." in key and not key.startswith("."):
        # Free-form plugin settings such as flapping.max_retry, as in Circus.
        extra = dict(changes.get("extra", base.extra))
        extra[key] = value if isinstance(value, str) else str(value)
        changes["extra"] = extra
        return
    raise ValueProblem(f"unknown option{closest(key, watcher_keys())}")


def watcher_option_value(config: WatcherConfig, key: str) -> Any:
    """The JSON value of one option, as ``get`` and ``options`` show it."""
    if key in WATCHER_OPTIONS:
        value = getattr(config, key)
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, Mapping):
            return dict(value)
        return value
    if key in ("stdout_stream", "stderr_stream"):
        return dict(getattr(config, key))
    if key == "hooks":
        return {
            name: f"{hook.target},{str(hook.ignore_errors).lower()}"
            for name, hook in config.hooks.items()
        }
    if key == "rlimits":
        return {name: list(limits) for name, limits in config.rlimits.items()}
    if key.startswith("rlimit_") and key[7:] in config.rlimits:
        return list(config.rlimits[key[7:]])
    if key.startswith(("stdout_stream.", "stderr_stream.")):
        stream, sub = key.split(".", 1)
        streams = getattr(config, stream)
        if sub in streams:
            return streams[sub]
    if key.startswith("hooks.") and key[6:] in config.hooks:
        hook = config.hooks[key[6:]]
        return f"{hook.target},{str(hook.ignore_errors).lower()}"
    if key in config.extra:
        return config.extra[key]
    raise KeyError(key)


def watcher_options_dict(config: WatcherConfig) -> dict[str, Any]:
    """Every option of a watcher, for the ``options`` command."""
    result: dict[str, Any] = {"name": config.name}
    for key in WATCHER_OPTIONS:
        result[key] = watcher_option_value(config, key)
    for key in ("stdout_stream", "stderr_stream", "hooks", "rlimits"):
        result[key] = watcher_option_value(config, key)
    result.update(config.extra)
    return result


def check_stream(conf: Mapping[str, str], custom: bool = False) -> None:
    """A stream block names a built-in class (or, with ``custom``, a dotted
    path) and the settings it needs."""
    class_name = conf.get("class", "")
    name = class_name.removeprefix("circus.stream.")
    if not class_name:
        raise ValueProblem(
            "a stream needs a class, one of " + ", ".join(STREAM_CLASSES)
        )
    if name not in STREAM_CLASSES:
        if custom and _dotted(class_name):
            return  # its own keys; loaded when the watcher is built
        raise ValueProblem(
            f"unknown stream class {class_name!r}{closest(name, STREAM_CLASSES)}; "
            f"use one of {', '.join(STREAM_CLASSES)}, or a dotted path to a "
            "class of your own (only in the config file)"
        )
    if name.endswith("FileStream") and not conf.get("filename"):
        raise ValueProblem(f"{name} needs a filename")
    for key, convert in (
        ("max_bytes", v.size),
        ("backup_count", v.bounded(0, 10_000)),
        ("rotate_interval", v.bounded(1, 10**6)),
        ("utc", v.boolean),
        ("priority", lambda x: syslog_level(x, SYSLOG_PRIORITIES, "priority")),
        ("facility", lambda x: syslog_level(x, SYSLOG_FACILITIES, "facility")),
        ("color", lambda x: _one_of(x, STREAM_COLORS, "color")),
        ("rotate_when", lambda x: _one_of(x.upper(), ROTATE_WHEN, "rotate_when")),
    ):
        if key in conf:
            try:
                convert(conf[key])
            except ValueProblem as exc:
                raise ValueProblem(f"{key}: {exc}") from None


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueProblem(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value


def _dotted(path: str) -> bool:
    parts = path.split(".")
    return len(parts) > 1 and all(part.isidentifier() for part in parts)
