"""``circusd CONFIG``: run the daemon.

Exit codes: 0 after a clean stop, 1 when it cannot start or fails at run
time, 2 for a usage error, 78 for a configuration error (so that systemd's
RestartPreventExitStatus can stop a restart loop on a broken file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from circusd import __version__
from circusd.errors import CircusdError, ConfigError

EXIT_CONFIG = 78

log = logging.getLogger("circusd")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circusd", description="Run processes from a Circus config file."
    )
    parser.add_argument("config", help="the configuration file (Circus INI)")
    parser.add_argument(
        "--log-level",
        dest="loglevel",
        choices=["debug", "info", "warning", "error", "critical"],
        type=str.lower,
        help="override [circus] loglevel",
    )
    parser.add_argument(
        "--log-output", dest="logoutput", help="'-' for stderr, or a file path"
    )
    parser.add_argument(
        "--logger-config", dest="loggerconfig", help="not supported; refused"
    )
    parser.add_argument("--pidfile", help="write circusd's pid to this file")
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="detach from the terminal (not needed under systemd)",
    )
    parser.add_argument("--version", action="version", version=f"circusd {__version__}")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def setup_logging(level: str, output: str, program: str = "circusd") -> None:
    journal = "JOURNAL_STREAM" in os.environ and output == "-"
    if journal:
        fmt = "<%(priority)d>%(name)s: %(message)s"
    else:
        fmt = (
            f"%(asctime)s {program}[%(process)d] [%(levelname)s] %(name)s: %(message)s"
        )
    if output == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        from logging.handlers import WatchedFileHandler

        handler = WatchedFileHandler(output)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(_add_priority)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def _add_priority(record: logging.LogRecord) -> bool:
    record.priority = _PRIORITIES.get(record.levelname, 6)
    return True


def write_pidfile(path: str) -> None:
    """Write our pid; refuse if another live circusd holds the file."""
    try:
        with open(path) as handle:
            old = int(handle.read().strip() or 0)
        if old and old != os.getpid():
            os.kill(old, 0)
            raise CircusdError(f"pidfile {path} belongs to running process {old}")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n")


def daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def open_standard_fds() -> None:
    """/dev/null on 0, 1 and 2 where circusd was started with them closed:
    otherwise the first files circusd opens take those numbers, and children
    that keep circusd's stdin, stdout or stderr get one of those, or none."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)


def main(argv: list[str] | None = None) -> None:
    open_standard_fds()
    args = parse_args(argv)
    from circusd.config.loader import load

    try:
        if args.loggerconfig:
            raise ConfigError("--logger-config is not supported")
        config = load(args.config)
    except ConfigError as exc:
        print(f"circusd: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    circus = config.circus
    level = args.loglevel or ("debug" if circus.debug else circus.loglevel)
    output = args.logoutput or circus.logoutput
    setup_logging(level, output)
    if circus.umask is not None:
        os.umask(circus.umask)
    if args.daemon and "NOTIFY_SOCKET" in os.environ:
        log.warning(
            "--daemon ignored: systemd supervises circusd (NOTIFY_SOCKET "
            "is set) and expects it to stay its main process"
        )
    elif args.daemon:
        daemonize()
    pidfile = args.pidfile or circus.pidfile
    sys.exit(_run(config, pidfile))


def _run(config: object, pidfile: str | None) -> int:
    from circusd.capabilities import drop_unneeded
    from circusd.daemon import Daemon

    try:
        drop_unneeded()
        if pidfile:
            write_pidfile(pidfile)
        try:
            return asyncio.run(Daemon(config).run())  # type: ignore[arg-type]
        finally:
            if pidfile:
                with contextlib.suppress(OSError):
                    os.unlink(pidfile)
    except ConfigError as exc:  # found while binding (endpoints, keys, owner)
        log.error("cannot start: %s", exc)
        print(f"circusd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CircusdError as exc:
        log.error("cannot start: %s", exc)
        print(f"circusd: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        print(f"circusd: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    main()
