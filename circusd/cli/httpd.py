"""``circushttpd``: the web console, and the commands that manage its users.

    circushttpd serve --users FILE [--endpoint E] [--host H --port P | --fd N]
    circushttpd adduser --users FILE [--read-only] [--replace] NAME
    circushttpd deluser --users FILE NAME

Every ``serve`` option can also come from the environment
(``CIRCUSHTTPD_ENDPOINT``, ``CIRCUSHTTPD_USERS``, ...); circusd passes the
console's settings that way under ``httpd = true``, so nothing it is given
shows in ``ps``. Passwords are never taken from the command line: adduser
asks for one on the terminal, or reads one line from standard input.

Exit codes: 0 ok, 1 runtime failure (cannot listen, unreadable files),
2 usage or unsafe settings.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys

from circusd import __version__
from circusd.cli.daemon import setup_logging
from circusd.errors import CircusdError

EXIT_FAILURE = 1
EXIT_USAGE = 2
ENV_PREFIX = "CIRCUSHTTPD_"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circushttpd",
        description="The circusd web console, and its users.",
        epilog="Exit codes: 0 ok; 1 runtime failure; 2 usage or unsafe settings.",
    )
    parser.add_argument(
        "--version", action="version", version=f"circushttpd {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the console")
    serve.add_argument(
        "--endpoint",
        default=_env("ENDPOINT", "tcp://127.0.0.1:5555"),
        help="circusd's control endpoint (env CIRCUSHTTPD_ENDPOINT)",
    )
    serve.add_argument(
        "--pubsub-endpoint",
        default=_env("PUBSUB_ENDPOINT"),
        help="event stream (default: as circusd's globaloptions say)",
    )
    serve.add_argument(
        "--stats-endpoint",
        default=_env("STATS_ENDPOINT"),
        help="statistics stream (default: as circusd's globaloptions say)",
    )
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8080") or 8080))
    serve.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on this listening socket (passed by circusd) instead",
    )
    serve.add_argument(
        "--users", default=_env("USERS"), help="the users file (env CIRCUSHTTPD_USERS)"
    )
    serve.add_argument("--certfile", default=_env("CERTFILE"), help="TLS certificate")
    serve.add_argument("--keyfile", default=_env("KEYFILE"), help="TLS private key")
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="a reverse proxy whose X-Forwarded-* headers are believed "
        "(repeatable; env CIRCUSHTTPD_TRUSTED_PROXIES, comma-separated)",
    )
    serve.add_argument(
        "--timeout", type=float, default=float(_env("TIMEOUT", "5") or 5)
    )
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error", "critical"],
    )
    serve.add_argument(
        "--allow-root",
        action="store_true",
        help="run as root anyway: every console user then has root's rights "
        "over circusd",
    )

    for name, what in (("adduser", "add a console user"), ("deluser", "remove one")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--users", required=True, help="the users file")
        command.add_argument("name", help="the user's login name")
        if name == "adduser":
            command.add_argument(
                "--read-only",
                action="store_true",
                help="the user may look but not act",
            )
            command.add_argument(
                "--replace",
                action="store_true",
                help="change an existing user's password and role",
            )
    return parser


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"circushttpd: error: {message}", file=sys.stderr)
    return code


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise CircusdError("the two passwords differ")
    return first


def manage_users(args: argparse.Namespace) -> int:
    from circusd.web.passwords import Role, update_users

    try:
        if args.command == "deluser":
            update_users(args.users, args.name, remove=True)
            print(f"removed {args.name} from {args.users}")
            return 0
        role = Role.READ if args.read_only else Role.OPERATE
        update_users(
            args.users,
            args.name,
            password=read_password(),
            role=role,
            replace=args.replace,
        )
    except (CircusdError, OSError) as exc:
        return _fail(str(exc))
    print(
        f"{'updated' if args.replace else 'added'} {args.name} ({role}) in {args.users}"
    )
    return 0


def run_console(args: argparse.Namespace) -> int:
    from circusd.web.server import serve
    from circusd.web.settings import Settings, SettingsError, parse_proxies

    if not args.users:
        return _fail("no users file: give --users FILE (circushttpd adduser makes one)",
                     EXIT_USAGE)  # fmt: skip
    if os.geteuid() == 0 and not args.allow_root:
        return _fail(
            "refusing to run as root: the console would give every web user "
            "root's rights over circusd; run it as an unprivileged user (the "
            "endpoint_owner, or a member of readonly_group) or pass --allow-root",
            EXIT_USAGE,
        )
    try:
        proxies = parse_proxies(
            ",".join(args.trusted_proxy or [_env("TRUSTED_PROXIES", "") or ""])
        )
        settings = Settings(
            endpoint=args.endpoint,
            users_file=args.users,
            pubsub_endpoint=args.pubsub_endpoint,
            stats_endpoint=args.stats_endpoint,
            host=args.host,
            port=args.port,
            fd=args.fd,
            certfile=args.certfile,
            keyfile=args.keyfile,
            trusted_proxies=proxies,
            timeout=args.timeout,
        )
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    setup_logging(args.log_level, "-", "circushttpd")
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (CircusdError, OSError, ssl.SSLError) as exc:
        return _fail(f"cannot start: {exc}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "serve":
        sys.exit(run_console(args))
    sys.exit(manage_users(args))


if __name__ == "__main__":
    main()
