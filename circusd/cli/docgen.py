"""Write docs/circusctl.md from circusctl's click commands.

Run ``python -m circusd.cli.docgen > docs/circusctl.md``. The help text of
each command is the reference; this module only adds the introduction and
lays the commands out as Markdown, so the page and ``--help`` never disagree.
"""

from __future__ import annotations

import inspect
import sys

import click

from circusd.cli.circusctl import cli

INTRODUCTION = """\
# circusctl

`circusctl` controls a running circusd daemon from the shell. It speaks the
control protocol of Circus 0.19, so it also drives a Circus daemon, and
Circus's own `circusctl` can drive circusd.

Each command sends one request to the daemon's control endpoint and prints
the reply in a readable form: tables for `status`, `stats` and `listsockets`,
`key = value` lines for `options`, `get`, `dstats` and `globaloptions`, one
item per line for `list`. With `--json` it prints the daemon's reply as it
came (indented with `--prettify`), for scripts.

## Finding the daemon

The endpoint comes from `--endpoint`, else from `CIRCUSCTL_ENDPOINT`, else it
is `tcp://127.0.0.1:5555` (Circus's default). An `ipc://` path that is not
absolute is taken from the current directory, and error messages name the
absolute path that was tried. Unix socket paths longer than 107 bytes are
refused at once. Before it sends anything, circusctl checks that something
accepts connections on the endpoint, so a daemon that is not running is
reported at once instead of after the timeout.

`--timeout` bounds connecting, then each exchange: replies to earlier,
timed-out requests are ignored without extending it. A command sent with
`--waiting` can take longer than the timeout on the daemon's side;
circusctl then stops waiting and exits 1, while the daemon finishes the
work.

## Through SSH, and on many hosts

With `--ssh [USER@]HOST[:PORT]`, circusctl connects to the host with SSH
(paramiko, in the circusctl process) and reaches the endpoint from there:
`--endpoint` then names an ipc path or tcp address on the remote host. It
reads `~/.ssh/config` (ProxyJump and ProxyCommand included), uses ssh-agent
and `--ssh-keyfile`, asks for a password on the terminal when the server
takes one and no key works, and checks the host key against known_hosts.
`--timeout` bounds the SSH connection set-up (not the time a password takes
to type), then each exchange with the daemon.

Several `--ssh` options, or `--ssh-hosts FILE`, run the same command on every
host in parallel; each output line starts with the host, and the exit code is
0 only if every host succeeded. [remote.md](remote.md) covers set-up, the
hosts file, security and errors.

## Exit codes

| code | meaning |
| --- | --- |
| 0 | the daemon replied with success |
| 1 | failure: no daemon answers, no reply in time, or an unexpected error |
| 2 | usage error: bad command, option, argument or endpoint |
| 3 | the daemon replied with an error (its reason is printed) |
| 130 | interrupted with Ctrl-C (except `listen`, which then exits 0) |

The codes are the same with `--json`. Errors are printed on stderr as one
line, `circusctl: error: REASON`; with `--json` the daemon's error reply is
also printed on stdout. On many hosts, the exit code is 0 if every host
succeeded, the failing hosts' code if they all agree, and 1 otherwise.

## Differences from Circus's circusctl

- Without a command, circusctl prints its help; there is no interactive
  shell.
- `--json` no longer hides errors: the exit code is 3 when the daemon
  replied with an error.
- Signal names are checked before anything is sent (`signal`, `kill
  --signum`, `set NAME stop_signal`), and sent as numbers.
- `status` without a name shows the number of processes and, when circusd
  gives one, the reason a watcher failed.
- `listen` prints one readable line per event and can stop after `--count`
  events.
- `--ssh` also reaches ipc endpoints, checks host keys against
  known_hosts (unknown and changed keys are refused), opens no local TCP
  port, and can be repeated to run a command on many hosts.
- Options written with an underscore in Circus (`--graceful_timeout`,
  `--ssh_keyfile`) are accepted as well as the dashed form shown here.
"""

COMMAND_EXIT_CODES = (
    "Exit codes: 0 ok, 1 daemon not reachable or no reply in time, 2 usage "
    "error, 3 the daemon replied with an error."
)


def option_lines(command: click.Command, ctx: click.Context) -> list[str]:
    lines = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or "--help" in param.opts:
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        lines.append(f"- `{names}`: {help_text}" if help_text else f"- `{names}`")
    return lines


def command_section(name: str, command: click.Command, parent: click.Context) -> str:
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    parts = [
        f"### {name}",
        "",
        "```",
        f"circusctl {name} {usage}",
        "```",
        "",
        inspect.cleandoc(command.help or ""),
    ]
    options = option_lines(command, ctx)
    if options:
        parts += ["", "Options:", "", *options]
    parts += ["", COMMAND_EXIT_CODES]
    return "\n".join(parts)


def generate() -> str:
    root = click.Context(cli, info_name="circusctl")
    sections = [
        INTRODUCTION.rstrip("\n"),
        "## Global options",
        "```\ncircusctl [GLOBAL OPTIONS] COMMAND [ARGS]...\n```",
        "\n".join(option_lines(cli, root)),
        "## Commands",
    ]
    for name in sorted(cli.list_commands(root)):
        command = cli.get_command(root, name)
        if command is not None and not command.hidden:
            sections.append(command_section(name, command, root))
    return "\n\n".join(sections) + "\n"


def main() -> None:
    sys.stdout.write(generate())


if __name__ == "__main__":
    main()
