"""Write the man pages circusd(8), circusctl(1) and circushttpd(8) from the
command lines themselves: the argparse parsers and circusctl's click commands.

Run ``python -m circusd.cli.mangen DIRECTORY``; it writes ``circusd.8``,
``circusctl.1`` and ``circushttpd.8`` there. The Debian package does this at
build time, so the pages always describe the options and commands of the code
they ship with.
The date on the pages is taken from SOURCE_DATE_EPOCH when it is set (as
dpkg-buildpackage does), so a rebuild gives the same files.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import click

from circusd import __version__
from circusd.cli import daemon, httpd
from circusd.cli.circusctl import EXIT_CODES_HELP, cli

SOURCE = f"circusd {__version__}"
FILES = [
    ("/etc/circus/circusd.ini", "the configuration read by circusd.service"),
    (
        "/etc/circus/conf.d/*.ini",
        "one file per application, included by the packaged circusd.ini",
    ),
    ("/run/circus/ctl.sock", "the control endpoint of the packaged configuration"),
    ("/run/circus/pubsub.sock", "its event stream"),
]

CIRCUSD_DESCRIPTION = """\
circusd starts the processes that CONFIG describes, restarts them when they
die, shares listening sockets between them, sends their output where the
configuration says, and answers circusctl(1) on its control endpoint. It
reads Circus 0.19 configuration files and speaks Circus's control protocol.

It is meant to run as root under systemd (circusd.service): it tells systemd
when it is ready, pings its watchdog, adopts sockets passed by socket units,
re-reads CONFIG on SIGHUP (systemctl reload circusd) and stops every process
it started on SIGTERM. Each control request is tied to the Unix user that
sent it; root may do everything, the user named by endpoint_owner may operate
the watchers, and members of readonly_group may only read.

The configuration options are described in
/usr/share/doc/circusd/configuration.md.gz, running under systemd in
systemd.md.gz and the security model in security.md.gz."""

CIRCUSD_EXIT = [
    ("0", "circusd stopped cleanly"),
    ("1", "circusd could not start, or failed while running"),
    ("2", "usage error on the command line"),
    (str(daemon.EXIT_CONFIG), "the configuration was refused; the message names "
     "the file, line, section and option"),
]  # fmt: skip

CIRCUSCTL_ENVIRONMENT = """\
The control endpoint when --endpoint is not given. Without it, circusctl
uses the packaged daemon's ipc:///run/circus/ctl.sock when that socket
exists, and Circus's tcp://127.0.0.1:5555 otherwise."""

CIRCUSHTTPD_DESCRIPTION = """\
circushttpd is circusd's web console: it shows the watchers and processes
of a circusd, live, with CPU and memory charts, and lets its users start,
stop, restart and signal them. It talks to circusd only through the control,
event and statistics endpoints, so it has exactly the rights of the Unix
user it runs as. Console users log in with a password kept as a scrypt hash
in a users file, which the adduser and deluser commands manage.

circusd runs it as a watcher when its configuration says httpd = true, as
httpd_user and on httpd_host:httpd_port (127.0.0.1:8080 by default). The
whole guide, including serving it behind nginx, is
/usr/share/doc/circusd/web.md.gz."""


# -- roff ----------------------------------------------------------------------


def text(value: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, `code` in bold,
    and no line starting with a control character."""
    value = value.replace("\\", "\\e").replace("-", "\\-")
    value = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", value)
    lines = []
    for line in value.splitlines():
        line = line.strip()
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def paragraphs(value: str) -> str:
    """Blank-line separated paragraphs of ``value``, each a roff .PP."""
    blocks = [b for b in re.split(r"\n\s*\n", inspect.cleandoc(value)) if b.strip()]
    return "\n.PP\n".join(text(block) for block in blocks)


def header(name: str, section: int, title: str) -> list[str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    return [
        f'.TH {name.upper()} {section} "{when:%Y-%m-%d}" "{SOURCE}" "{title}"',
        ".SH NAME",
        f"{name} \\- {text(_first_sentence(title))}",
    ]


def _first_sentence(value: str) -> str:
    return value.split(". ")[0].rstrip(".")


def tagged(items: Iterable[tuple[str, str]]) -> list[str]:
    lines = []
    for tag, body in items:
        lines += [".TP", tag, body]
    return lines


# -- circusd(8) ------------------------------------------------------------------


def _action_tag(action: argparse.Action) -> str:
    # circusd's parser uses no tuple metavars: one word per value.
    metavar = str(action.metavar or action.dest.upper())
    if not action.option_strings:
        return f"\\fI{text(metavar).upper()}\\fR"
    names = ", ".join(f"\\fB{text(name)}\\fR" for name in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices:
        metavar = "|".join(str(choice) for choice in action.choices)
    return f"{names} \\fI{text(metavar)}\\fR"


def circusd_page() -> str:
    parser = daemon.make_parser()
    # One line whatever the terminal: the page must not depend on COLUMNS.
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10_000)
    usage = parser.format_usage().removeprefix("usage: ").strip()
    options = [
        (_action_tag(action), text(action.help or ""))
        for action in parser._actions  # argparse keeps no public list
    ]
    lines = [
        *header("circusd", 8, "Circus-compatible process supervisor"),
        ".SH SYNOPSIS",
        text(usage.split(" ", 1)[0]).join(["\\fB", "\\fR "])
        + text(usage.split(" ", 1)[1]),
        ".SH DESCRIPTION",
        paragraphs(CIRCUSD_DESCRIPTION),
        ".SH OPTIONS",
        *tagged(options),
        ".SH EXIT STATUS",
        *tagged(CIRCUSD_EXIT),
        ".SH FILES",
        *tagged((f"\\fI{text(path)}\\fR", text(what)) for path, what in FILES),
        ".SH SEE ALSO",
        "\\fBcircusctl\\fR(1), \\fBsystemctl\\fR(1), \\fBsystemd.service\\fR(5)",
    ]
    return "\n".join(lines) + "\n"


# -- circusctl(1) ----------------------------------------------------------------


def _option_items(
    command: click.Command, ctx: click.Context, *, with_help: bool = True
) -> list[tuple[str, str]]:
    items = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option):
            continue
        if not with_help and "--help" in param.opts:
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        items.append((f"\\fB{text(names)}\\fR", text(help_text)))
    return items


def _command_section(
    name: str, command: click.Command, root: click.Context
) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=root)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [
        f".SS {name}",
        f"\\fBcircusctl {name}\\fR {text(usage)}",
        ".PP",
        paragraphs(command.help or ""),
    ]
    options = _option_items(command, ctx, with_help=False)
    if options:
        lines += [".PP", "Options:", ".RS", *tagged(options), ".RE"]
    return lines


def circusctl_page() -> str:
    root = click.Context(cli, info_name="circusctl")
    commands = []
    for name in sorted(cli.list_commands(root)):
        command = cli.get_command(root, name)
        if command is not None and not command.hidden:
            commands += _command_section(name, command, root)
    lines = [
        *header("circusctl", 1, "control a running circusd"),
        ".SH SYNOPSIS",
        "\\fBcircusctl\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        paragraphs(cli.help or ""),
        ".PP",
        text(
            "Each command sends one request to the daemon's control endpoint and "
            "prints the reply; with --json it prints the reply as the daemon sent "
            "it. The full reference, with examples, is "
            "/usr/share/doc/circusd/circusctl.md.gz."
        ),
        ".SH GLOBAL OPTIONS",
        *tagged(_option_items(cli, root)),
        ".SH COMMANDS",
        *commands,
        ".SH ENVIRONMENT",
        *tagged([("\\fBCIRCUSCTL_ENDPOINT\\fR", paragraphs(CIRCUSCTL_ENVIRONMENT))]),
        ".SH EXIT STATUS",
        text(EXIT_CODES_HELP.removeprefix("Exit codes: ")),
        ".SH SEE ALSO",
        "\\fBcircusd\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


# -- circushttpd(8) ------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return [
        (_action_tag(action), text(action.help or ""))
        for action in parser._actions  # argparse keeps no public list
        if not isinstance(action, argparse._SubParsersAction)
    ]


def circushttpd_page() -> str:
    parser = httpd.make_parser()
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    sections = []
    for name, sub in commands.choices.items():
        sections += [
            f".SS {name}",
            text(helps.get(name) or ""),
            ".RS",
            *tagged(_options(sub)),
            ".RE",
        ]
    lines = [
        *header("circushttpd", 8, "the circusd web console"),
        ".SH SYNOPSIS",
        "\\fBcircushttpd\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        paragraphs(CIRCUSHTTPD_DESCRIPTION),
        ".SH COMMANDS",
        *sections,
        ".SH EXIT STATUS",
        text(str(parser.epilog or "").removeprefix("Exit codes: ")),
        ".SH SEE ALSO",
        "\\fBcircusd\\fR(8), \\fBcircusctl\\fR(1)",
    ]
    return "\n".join(lines) + "\n"


PAGES = {
    "circusd.8": circusd_page,
    "circusctl.1": circusctl_page,
    "circushttpd.8": circushttpd_page,
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m circusd.cli.mangen DIRECTORY")
    folder = Path(args[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        (folder / name).write_text(page(), encoding="utf-8")


if __name__ == "__main__":
    main()
