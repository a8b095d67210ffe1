"""circusctl: control a running circusd (or Circus) daemon from the shell.

Every command sends one request on the control endpoint and prints the reply
as text, or as the raw JSON with ``--json``. Exit codes: 0 ok, 1 failure
(no daemon, timeout, anything unexpected), 2 usage error, 3 the daemon
replied with an error.

With ``--ssh`` the connections go through SSH (circusd.client.ssh); with
several targets the command runs on each host in parallel (cli.remote).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn

import click
import zmq

from circusd import __version__
from circusd.cli import remote, render
from circusd.client import (
    DEFAULT_ENDPOINT,
    CallError,
    CallTimeout,
    CircusClient,
    Connector,
    DaemonUnreachable,
    InvalidEndpoint,
    ReplyError,
    connect_socket,
    subscribe,
)
from circusd.client.endpoints import PACKAGED_ENDPOINT, default_endpoint
from circusd.client.ssh import InvalidTarget, SSHError
from circusd.config import values
from circusd.config.options import WATCHER_OPTIONS
from circusd.errors import ValueProblem

if TYPE_CHECKING:
    from circusd.client.ssh import SSHOptions, SSHSession

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REPLY_ERROR = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 failure (daemon not running or not reachable, "
    "timeout, unexpected error); 2 usage error; 3 the daemon replied with an "
    "error; 130 interrupted (Ctrl-C)."
)


class Failure(click.ClickException):
    """An error for the user: one line on stderr and a documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # a ClassVar in click

    def show(self, file: Any = None) -> None:
        _error(self.message)


class CircusctlGroup(click.Group):
    """A group that remembers the arguments of the subcommand, so that the
    command can run once per host (``--ssh`` given more than once)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[SUBCOMMAND_ARGS] = list(rest)
        return name, command, rest


SUBCOMMAND_ARGS = "circusctl.subcommand_args"


class AliasedOption(click.Option):
    """An option whose extra spellings (Circus's underscore forms) stay hidden."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*names: str, **kwargs: Any) -> Callable[[Any], Any]:
    """click.option that also accepts ``--a_b`` for every ``--a-b``."""
    spellings = list(names)
    for name in names:
        if name.startswith("--") and "-" in name[2:]:
            spellings.append("--" + name[2:].replace("-", "_"))
    return click.option(*spellings, cls=AliasedOption, **kwargs)


waiting_option = option(
    "--waiting",
    is_flag=True,
    help="Reply only once the work is done (the daemon replies at once "
    "otherwise and reports later failures only in its log).",
)


@dataclass
class Settings:
    endpoint: str
    timeout: float
    as_json: bool
    prettify: bool
    connect: Connector = connect_socket
    context: zmq.Context[Any] | None = None
    output: remote.Output = field(default_factory=remote.Output)
    session: SSHSession | None = None
    hint: str | None = None  # said after a timeout
    # Several hosts for a command that shows them itself (top), not fanned out.
    fleet: tuple[list[remote.Host], SSHOptions] | None = None
    _client: CircusClient | None = field(default=None, repr=False)

    def client(self) -> CircusClient:
        if self._client is None:
            try:
                self._client = CircusClient(
                    self.endpoint,
                    self.timeout,
                    connect=self.connect,
                    context=self.context,
                )
            except InvalidEndpoint as exc:
                raise Failure(str(exc), EXIT_USAGE) from None
            click.get_current_context().call_on_close(self._client.close)
        return self._client

    def dump(self, data: Any) -> str:
        if self.prettify:
            return json.dumps(data, indent=2)
        return json.dumps(data)

    def echo(self, text: str) -> None:
        self.output.echo(text)

    def explain(self, exc: CallError) -> str:
        """The error, with what broke in the SSH tunnel if that is known."""
        problem = self.session.problem() if self.session is not None else None
        if problem and isinstance(exc, DaemonUnreachable):
            return f"{exc}; {problem}"
        if self.hint and isinstance(exc, CallTimeout):
            return f"{exc}; {self.hint}"
        return str(exc)


def call(settings: Settings, command: str, **properties: Any) -> dict[str, Any]:
    """One request; every CallError becomes a Failure with its exit code."""
    try:
        return settings.client().call(command, **properties)
    except ReplyError as exc:
        if settings.as_json:
            settings.echo(settings.dump(exc.reply))
        raise Failure(exc.reason, EXIT_REPLY_ERROR) from None
    except (InvalidEndpoint, InvalidTarget) as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    except CallError as exc:
        raise Failure(settings.explain(exc), EXIT_FAILURE) from None


def run(
    settings: Settings,
    command: str,
    render_reply: Callable[[dict[str, Any]], Sequence[str] | str],
    **properties: Any,
) -> None:
    """Call, then print the raw reply (``--json``) or its readable form."""
    reply = call(settings, command, **_without_unset(properties))
    if settings.as_json:
        settings.echo(settings.dump(reply))
        return
    lines = render_reply(reply)
    settings.echo(lines if isinstance(lines, str) else "\n".join(lines))


def _without_unset(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in properties.items()
        if value is not None and value is not False
    }


def usage_error(message: str) -> NoReturn:
    raise click.UsageError(message, click.get_current_context())


@click.group(
    cls=CircusctlGroup,
    invoke_without_command=True,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@option(
    "--endpoint",
    envvar="CIRCUSCTL_ENDPOINT",
    metavar="ENDPOINT",
    help="Control endpoint of the daemon: tcp://HOST:PORT or ipc://PATH (a "
    "relative PATH is taken from the current directory). Also read from "
    f"CIRCUSCTL_ENDPOINT. Default: {PACKAGED_ENDPOINT} (the packaged circusd) "
    f"if that socket exists, else {DEFAULT_ENDPOINT} (Circus's); with --ssh, "
    f"{DEFAULT_ENDPOINT}.",
)
@option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds to wait to connect (over SSH: to log in), then for each "
    "exchange with the daemon.",
)
@option("--json", "as_json", is_flag=True, help="Print the daemon's raw JSON reply.")
@option("--prettify", is_flag=True, help="Like --json, but indented.")
@option(
    "--ssh",
    multiple=True,
    metavar="[USER@]HOST[:PORT]",
    help="Reach the endpoint through SSH on this host (ipc paths and tcp "
    "addresses are then those of the remote host). Repeat it to run the "
    "command on several hosts in parallel, each line of output prefixed "
    "with its host (top: one screen, a section per host). See docs/remote.md.",
)
@option(
    "--ssh-hosts",
    metavar="FILE",
    help="Run the command on every host listed in FILE, one "
    "[USER@]HOST[:PORT] per line, optionally followed by that host's "
    "ENDPOINT; '#' starts a comment.",
)
@option(
    "--ssh-keyfile",
    metavar="PATH",
    help="Private key to offer first (its passphrase is asked on the terminal "
    "if needed), before the ssh-agent's keys and the IdentityFile keys.",
)
@option(
    "--ssh-config",
    metavar="PATH",
    help="OpenSSH client config to read instead of ~/.ssh/config.",
)
@option(
    "--ssh-accept-new",
    is_flag=True,
    help="Add the host key of a host that is in no known_hosts file to "
    "~/.ssh/known_hosts, as OpenSSH's StrictHostKeyChecking=accept-new; a "
    "changed key is still refused.",
)
@option(
    "--curve-server-key",
    envvar="CIRCUSCTL_CURVE_SERVER_KEY",
    metavar="PATH",
    help="The daemon's public CURVE certificate, for a tcp endpoint beyond "
    "loopback (with --curve-key). Also read from CIRCUSCTL_CURVE_SERVER_KEY.",
)
@option(
    "--curve-key",
    envvar="CIRCUSCTL_CURVE_KEY",
    metavar="PATH",
    help="Your CURVE certificate with its secret key (mode 0600); the daemon "
    "knows you by its public half. Also read from CIRCUSCTL_CURVE_KEY.",
)
@click.version_option(
    __version__, "--version", message="circusctl (circusd) %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint: str | None,
    timeout: float,
    as_json: bool,
    prettify: bool,
    ssh: tuple[str, ...],
    ssh_hosts: str | None,
    ssh_keyfile: str | None,
    ssh_config: str | None,
    ssh_accept_new: bool,
    curve_server_key: str | None,
    curve_key: str | None,
) -> None:
    """Control a running circusd daemon (or Circus 0.19).

    Run `circusctl COMMAND --help` for the arguments of a command.
    """
    if endpoint is None:
        endpoint = DEFAULT_ENDPOINT if ssh or ssh_hosts else default_endpoint()
    settings = Settings(endpoint, timeout, as_json or prettify, prettify)
    ctx.obj = settings
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)
    if curve_server_key or curve_key:
        _use_curve(settings, curve_server_key, curve_key, bool(ssh or ssh_hosts))
    if not ssh and ssh_hosts is None:
        if ssh_keyfile or ssh_config or ssh_accept_new:
            usage_error("--ssh-keyfile, --ssh-config and --ssh-accept-new need --ssh")
        return
    try:
        hosts = remote.collect_hosts(ssh, ssh_hosts)
    except InvalidTarget as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    for host in hosts:
        problem = remote.remote_endpoint_problem(host.endpoint or endpoint)
        if problem:
            raise Failure(problem, EXIT_USAGE)
    from circusd.client.ssh import KeyRing, SSHOptions, SSHSession  # slow import

    options = SSHOptions(
        timeout=timeout,
        config_file=ssh_config,
        accept_new=ssh_accept_new,
        keys=KeyRing(ssh_keyfile, remote.ask_passphrase),
        notice=lambda text: click.echo(f"circusctl: {text}", err=True),
        asker=remote.TERMINAL,
    )
    try:
        remote.preload_keys(hosts, options)
    except SSHError as exc:
        raise Failure(str(exc)) from None
    if len(hosts) == 1 and ssh_hosts is None:
        session = SSHSession(hosts[0].target, options)
        ctx.call_on_close(session.close)
        settings.connect = session.connect_socket
        settings.session = session
        return
    if ctx.invoked_subcommand == "top":  # one live view of every host
        settings.fleet = (hosts, options)
        return
    ctx.exit(_fan_out(ctx, settings, hosts, options))


def _use_curve(
    settings: Settings, server_key: str | None, key: str | None, ssh: bool
) -> None:
    if not (server_key and key):
        usage_error("--curve-server-key and --curve-key go together")
    if ssh:
        usage_error(
            "--curve-* and --ssh exclude each other (over SSH the daemon "
            "knows you by your login)"
        )
    from circusd.client import curve

    try:
        keys = curve.load_keys(server_key, key)
    except CallError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    settings.connect = curve.connector(keys)
    settings.hint = curve.HINT


def for_host(
    settings: Settings,
    host: remote.Host,
    session: SSHSession,
    context: zmq.Context[Any],
    output: remote.Output,
) -> Settings:
    """The settings of one host of many: its endpoint, through its session."""
    return replace(
        settings,
        endpoint=host.endpoint or settings.endpoint,
        connect=session.connect_socket,
        context=context,
        output=output,
        session=session,
        fleet=None,
    )


def _fan_out(
    ctx: click.Context,
    settings: Settings,
    hosts: list[remote.Host],
    options: SSHOptions,
) -> int:
    """Run the subcommand once per host, in parallel; the combined exit code."""
    name = ctx.invoked_subcommand or ""
    command = cli.get_command(ctx, name)
    args = ctx.meta.get(SUBCOMMAND_ARGS, [])
    if command is None:
        usage_error(f"no such command {name!r}")
    # Usage errors and --help once, here, before connecting anywhere.
    command.make_context(name, list(args), parent=ctx)

    def run_host(
        host: remote.Host,
        session: SSHSession,
        output: remote.Output,
        context: zmq.Context[Any],
    ) -> int:
        host_settings = for_host(settings, host, session, context, output)

        def invoke() -> Any:
            sub = command.make_context(name, list(args), parent=ctx, obj=host_settings)
            with sub:
                return command.invoke(sub)

        return guarded(invoke, output.error)

    interrupted = EXIT_OK if name == "listen" else EXIT_INTERRUPTED
    return remote.fan_out(hosts, options, run_host, interrupted)


pass_settings = click.pass_obj


def ok_lines(reply: dict[str, Any]) -> Sequence[str]:
    return render.lifecycle(reply)


@cli.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True}
)
@option("--start", is_flag=True, help="Start the watcher's processes at once.")
@waiting_option
@click.argument("name")
@click.argument("cmd", nargs=-1, required=True)
@pass_settings
def add(
    settings: Settings, name: str, cmd: tuple[str, ...], start: bool, waiting: bool
) -> None:
    """Add a watcher NAME that runs CMD.

    Options go before NAME; everything after NAME is the command. The words
    of CMD are joined with spaces, as Circus does: quote a command that needs
    its own quoting. Prints "ok", or with --start --waiting the
    pids that were started.
    """
    run(
        settings,
        "add",
        ok_lines,
        name=name,
        cmd=" ".join(cmd),
        start=start,
        waiting=waiting,
    )


@cli.command()
@option(
    "--nostop", is_flag=True, help="Forget the watcher but leave its processes running."
)
@waiting_option
@click.argument("name")
@pass_settings
def rm(settings: Settings, name: str, nostop: bool, waiting: bool) -> None:
    """Remove the watcher NAME.

    Its processes are stopped first, unless --nostop. Prints "ok".
    """
    run(settings, "rm", ok_lines, name=name, nostop=nostop, waiting=waiting)


def _lifecycle_command(command: str, summary: str) -> None:
    @cli.command(
        command,
        help=summary
        + (
            "\n\nNAME is a watcher name or pattern; without NAME the command "
            'applies to every watcher. Prints "ok", or with --waiting and one '
            "watcher the pids that were stopped, started and kept."
        ),
    )
    @waiting_option
    @option(
        "--match",
        type=click.Choice(["simple", "glob", "regex"]),
        help="How NAME is matched against watcher names (the daemon's default: glob).",
    )
    @click.argument("name", required=False)
    @pass_settings
    def command_function(
        settings: Settings, name: str | None, waiting: bool, match: str | None
    ) -> None:
        run(settings, command, ok_lines, name=name, waiting=waiting, match=match)


_lifecycle_command("start", "Start the watcher NAME, or all watchers.")
_lifecycle_command("stop", "Stop the watcher NAME, or all watchers.")
_lifecycle_command(
    "restart",
    "Restart the watcher NAME, or every watcher.\n\nWithout NAME, Circus "
    "also reads its configuration file again.",
)


@cli.command()
@option(
    "--terminate", is_flag=True, help="Stop and start instead of a graceful reload."
)
@option("--sequential", is_flag=True, help="Replace the processes one at a time.")
@waiting_option
@click.argument("name", required=False)
@pass_settings
def reload(
    settings: Settings,
    name: str | None,
    terminate: bool,
    sequential: bool,
    waiting: bool,
) -> None:
    """Reload the watcher NAME, or all watchers.

    Graceful by default: new processes are started before the old ones are
    stopped (or SIGHUP is sent when the watcher has send_hup). Prints "ok",
    or with NAME and --waiting the pids that were stopped, started and kept.
    """
    run(
        settings,
        "reload",
        ok_lines,
        name=name,
        graceful=not terminate,
        sequential=sequential,
        waiting=waiting,
    )


@cli.command()
@waiting_option
@pass_settings
def reloadconfig(settings: Settings, waiting: bool) -> None:
    """Read the configuration file again and apply it.

    Only what changed is restarted. Prints "ok".
    """
    run(settings, "reloadconfig", ok_lines, waiting=waiting)


@cli.command()
@click.argument("name", required=False)
@pass_settings
def reopen(settings: Settings, name: str | None) -> None:
    """Reopen the output files of the watcher NAME, or of all watchers.

    For after an outside log rotation (as SIGUSR1 to circusd); file streams
    also notice a renamed or removed file by themselves. circusd's own
    command: Circus has none. Prints "ok".
    """
    run(settings, "reopen", ok_lines, name=name)


def _scale_command(command: str, summary: str) -> None:
    @cli.command(
        command,
        help=summary
        + ('\n\nPrints the new number of processes (with --waiting; "ok" otherwise).'),
    )
    @waiting_option
    @click.argument("name")
    @click.argument("nb", type=click.IntRange(min=1), required=False)
    @pass_settings
    def command_function(
        settings: Settings, name: str, nb: int | None, waiting: bool
    ) -> None:
        run(settings, command, _numprocesses_text, name=name, nb=nb, waiting=waiting)


def _numprocesses_text(reply: dict[str, Any]) -> str:
    if reply.get("singleton"):
        return "singleton watcher: the number of processes stays 1"
    if "numprocesses" in reply:
        return render.text(reply["numprocesses"])
    return "ok"


_scale_command("incr", "Add NB processes (default 1) to the watcher NAME.")
_scale_command(
    "decr",
    "Remove NB processes (default 1) from the watcher NAME.\n\nThe oldest "
    "processes go first.",
)


def convert_set_value(key: str, raw: str) -> Any:
    """The JSON value ``set`` sends for ``key``, converted by the option's type.

    Text options stay text; numbers, booleans, signals and ``env`` ("A=1,B=2")
    are converted here, as Circus's client does. Raises ValueProblem.
    """
    option_ = WATCHER_OPTIONS.get(key)
    if option_ is not None:
        if option_.convert in _TEXT_CONVERTERS:
            return raw
        return option_.convert(raw)
    stream, _, sub = key.partition(".")
    if stream in ("stdout_stream", "stderr_stream") and sub in _STREAM_INTEGERS:
        return values.integer(raw)
    if key.startswith("rlimit_") and raw.strip().isdigit():
        return int(raw)
    return raw


_TEXT_CONVERTERS = (values.text, values.optional_text, values.arguments, values.ident)
_STREAM_INTEGERS = ("max_bytes", "backup_count")


@cli.command("set", context_settings={"ignore_unknown_options": True})
@waiting_option
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE]...")
@pass_settings
def set_(settings: Settings, name: str, pairs: tuple[str, ...], waiting: bool) -> None:
    """Change options of the watcher NAME.

    The watcher is reloaded when an option needs it.

    Values are converted by option type: numbers for numprocesses, max_retry,
    max_age, max_age_variance, warmup_delay and graceful_timeout, true/false
    for booleans, a signal name or number for stop_signal, and "A=1,B=2" for
    env. Prints "ok".
    """
    if len(pairs) % 2:
        usage_error(f"KEY {pairs[-1]!r} has no VALUE")
    options = {}
    for key, raw in zip(pairs[::2], pairs[1::2], strict=True):
        key = key.lower()
        try:
            options[key] = convert_set_value(key, raw)
        except ValueProblem as exc:
            usage_error(f"invalid value for {key}: {exc}")
    run(settings, "set", ok_lines, name=name, options=options, waiting=waiting)


@cli.command()
@click.argument("name")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_settings
def get(settings: Settings, name: str, keys: tuple[str, ...]) -> None:
    """Show the options KEY... of the watcher NAME.

    Prints one "key = value" line per option; values that are not text are
    shown as JSON.
    """
    run(
        settings,
        "get",
        lambda r: render.pairs(r.get("options") or {}),
        name=name,
        keys=list(keys),
    )


@cli.command()
@click.argument("name")
@pass_settings
def options(settings: Settings, name: str) -> None:
    """Show every option of the watcher NAME.

    Prints one "key = value" line per option; values that are not text are
    shown as JSON.
    """
    run(settings, "options", lambda r: render.pairs(r.get("options") or {}), name=name)


def _signum(raw: str, what: str) -> int:
    try:
        return values.signum(raw)
    except ValueProblem as exc:
        usage_error(f"invalid {what}: {exc}")


@cli.command("signal")
@option("--children", is_flag=True, help="Signal only the children of the process(es).")
@option(
    "--recursive",
    is_flag=True,
    help="Signal the process(es) and all their descendants.",
)
@click.argument("name")
@click.argument("args", nargs=-1, required=True, metavar="[PID] SIGNUM")
@pass_settings
def signal_(
    settings: Settings,
    name: str,
    args: tuple[str, ...],
    children: bool,
    recursive: bool,
) -> None:
    """Send a signal to the processes of the watcher NAME.

    SIGNUM is a number or a name (HUP, SIGHUP, RTMIN+1). With PID only that
    process is signalled. Prints "ok".
    """
    if len(args) > 2:
        usage_error("expected NAME [PID] SIGNUM")
    pid = _pid(args[0]) if len(args) == 2 else None
    run(
        settings,
        "signal",
        ok_lines,
        name=name,
        pid=pid,
        signum=_signum(args[-1], "SIGNUM"),
        children=children,
        recursive=recursive,
    )


def _pid(raw: str) -> int:
    if not raw.isdigit() or int(raw) == 0:
        usage_error(f"invalid PID {raw!r}: expected a positive number")
    return int(raw)


@cli.command()
@option(
    "--signum",
    metavar="SIGNAL",
    help="Signal to send first (default: the watcher's stop_signal).",
)
@option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Seconds to wait before SIGKILL (default: the watcher's graceful_timeout).",
)
@waiting_option
@click.argument("name")
@click.argument("pid", type=click.IntRange(min=1), required=False)
@pass_settings
def kill(
    settings: Settings,
    name: str,
    pid: int | None,
    signum: str | None,
    graceful_timeout: float | None,
    waiting: bool,
) -> None:
    """Kill the processes of the watcher NAME, or only PID.

    Sends SIGNUM, waits up to the graceful timeout, then sends SIGKILL. The
    watcher then starts new processes. Prints "ok".
    """
    number = _signum(signum, "--signum") if signum is not None else None
    run(
        settings,
        "kill",
        ok_lines,
        name=name,
        pid=pid,
        signum=number,
        graceful_timeout=graceful_timeout,
        waiting=waiting,
    )


@cli.command()
@option(
    "--extended", is_flag=True, help="Ask for the extended_stats hook's output too."
)
@click.argument("name", required=False)
@click.argument("pid", type=click.IntRange(min=1), required=False)
@pass_settings
def stats(
    settings: Settings, name: str | None, pid: int | None, extended: bool
) -> None:
    """Show CPU, memory and age of processes.

    Of every watcher, of the watcher NAME, or of its process PID. Prints a
    table: watcher, pid, wid, CPU %, memory %, RSS, VMS, age and command;
    child processes are indented under their parent.
    """

    def render_stats(reply: dict[str, Any]) -> Sequence[str]:
        if "infos" in reply:
            return render.stats(reply["infos"] or {})
        info = reply.get("info") or {}
        if pid is not None:
            return render.stats({name or "": {str(pid): info}})
        return render.stats({name or "": info})

    run(settings, "stats", render_stats, name=name, process=pid, extended=extended)


@cli.command()
@click.argument("name", required=False)
@pass_settings
def status(settings: Settings, name: str | None) -> None:
    """Show the status of every watcher, or of NAME.

    Without NAME prints a table: watcher, status, number of processes, and
    why the watcher failed when the daemon says so. With NAME prints the
    status word alone (active, stopped, starting, stopping, failed), followed
    by the reason in parentheses when there is one.
    """
    if name is not None:
        run(settings, "status", lambda r: render.single_status(name, r), name=name)
        return
    reply = call(settings, "status")
    if settings.as_json:
        settings.echo(settings.dump(reply))
        return
    statuses = reply.get("statuses") or {}
    reasons = reply.get("reasons")
    counts = {watcher: _process_count(settings, watcher) for watcher in statuses}
    settings.echo(
        "\n".join(
            render.status_rows(
                statuses, counts, reasons if isinstance(reasons, dict) else {}
            )
        )
    )


def _process_count(settings: Settings, watcher: str) -> int | None:
    """The number of running processes, or None if the watcher went away."""
    try:
        pids = settings.client().call("list", name=watcher).get("pids")
    except ReplyError:
        return None
    except CallError as exc:
        raise Failure(settings.explain(exc)) from None
    return len(pids) if isinstance(pids, list) else None


@cli.command("list")
@click.argument("name", required=False)
@pass_settings
def list_(settings: Settings, name: str | None) -> None:
    """List the watchers, or the pids of the watcher NAME.

    Prints one name or pid per line.
    """
    key = "pids" if name else "watchers"
    run(
        settings,
        "list",
        lambda r: [render.text(x) for x in r.get(key) or []],
        name=name,
    )


@cli.command()
@click.argument("name", required=False)
@pass_settings
def numprocesses(settings: Settings, name: str | None) -> None:
    """Print the number of processes of NAME, or of all watchers."""
    run(settings, "numprocesses", _numprocesses_text, name=name)


@cli.command()
@pass_settings
def numwatchers(settings: Settings) -> None:
    """Print the number of watchers."""
    run(settings, "numwatchers", lambda r: render.text(r.get("numwatchers")))


@cli.command()
@pass_settings
def listsockets(settings: Settings) -> None:
    """Show the sockets the daemon manages.

    Prints a table: name, file descriptor, address (host:port or path) and
    listen backlog.
    """
    run(settings, "listsockets", lambda r: render.sockets(r.get("sockets") or []))


@cli.command()
@pass_settings
def dstats(settings: Settings) -> None:
    """Show CPU, memory and age of the daemon itself.

    Prints one "key = value" line per field; children are listed by pid.
    """
    run(settings, "dstats", lambda r: render.process_info(r.get("info") or {}))


@cli.command()
@click.argument("key", required=False)
@pass_settings
def globaloptions(settings: Settings, key: str | None) -> None:
    """Show the daemon's global options, or only KEY.

    The endpoints and check_delay. Prints one "key = value" line per option.
    """
    run(
        settings,
        "globaloptions",
        lambda r: render.pairs(r.get("options") or {}),
        option=key,
    )


@cli.command("quit")
@waiting_option
@pass_settings
def quit_(settings: Settings, waiting: bool) -> None:
    """Stop every watcher, then the daemon itself. Prints "ok"."""
    run(settings, "quit", ok_lines, waiting=waiting)


@cli.command()
@option("--count", type=click.IntRange(min=1), metavar="N", help="Exit after N events.")
@click.argument("topics", nargs=-1, metavar="[TOPIC]...")
@pass_settings
def listen(settings: Settings, topics: tuple[str, ...], count: int | None) -> None:
    """Print the daemon's events as they happen, until Ctrl-C.

    The event endpoint is asked from the daemon (globaloptions). A TOPIC is a
    prefix such as "watcher." or "watcher.web."; without one every event is
    shown. Prints one line per event: time, topic (watcher.NAME.EVENT) and
    the event's fields as key=value; with --json one JSON object per line.
    Ctrl-C ends it with exit code 0.
    """
    reply = call(settings, "globaloptions")
    endpoint = (reply.get("options") or {}).get("pubsub_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise Failure("the daemon did not tell its pubsub_endpoint")
    problem = remote.remote_endpoint_problem(endpoint) if settings.session else None
    if problem:
        raise Failure(f"event stream: {problem}")
    events = None
    try:
        events = subscribe(
            endpoint,
            topics or ("",),
            timeout=settings.timeout,
            connect=settings.connect,
            context=settings.context,
        )
        settings.output.error(f"circusctl: listening on {endpoint}")
        for seen, event in enumerate(events, start=1):
            if settings.as_json:
                settings.echo(settings.dump({"topic": event.topic, "data": event.data}))
            else:
                settings.echo(render.event_line(event))
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        return
    except InvalidEndpoint as exc:
        raise Failure(str(exc)) from None
    except CallError as exc:
        raise Failure(f"event stream: {settings.explain(exc)}") from None
    finally:
        # Before the SSH session, which the click context closes after this.
        if events is not None:
            events.close()


# `top` lives in its own module, which uses the names above. Run as
# `python -m circusd.cli.circusctl`, this file is __main__ and the block at
# the end loads the module proper, which registers it.
if __name__ != "__main__":
    from circusd.cli.top import top

    cli.add_command(top)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line, never show a traceback."""
    setup_logging()
    sys.exit(run_cli(argv))


def setup_logging() -> None:
    """Our own warnings as ``circusctl: warning:`` lines; nothing from paramiko,
    whose failures reach the user as the errors they cause."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("circusctl: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("circusd").addHandler(handler)
    logging.getLogger("paramiko").addHandler(logging.NullHandler())


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run circusctl with ``argv`` and return its exit code.

    Every error ends as one ``circusctl: error:`` line on stderr.
    """
    return guarded(
        lambda: cli.main(args=argv, prog_name="circusctl", standalone_mode=False),
        lambda text: click.echo(text, err=True),
    )


def guarded(action: Callable[[], Any], error: Callable[[str], None]) -> int:
    """Run ``action``; turn its result or exception into an exit code, and
    every error into one ``circusctl: error:`` line written with ``error``."""

    def report(message: str) -> None:
        error(f"circusctl: error: {message}")

    try:
        result = action()
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        report(exc.format_message() + hint)
        return EXIT_USAGE
    except click.ClickException as exc:
        report(exc.format_message())
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        report("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as exc:  # the last line of defence against tracebacks
        detail = str(exc).splitlines()[0] if str(exc) else ""
        report(f"unexpected {type(exc).__name__}: {detail}")
        return EXIT_FAILURE
    return result if isinstance(result, int) else EXIT_OK


def _error(message: str) -> None:
    click.echo(f"circusctl: error: {message}", err=True)


def _silence_stdout() -> None:
    # The reader went away; keep Python from complaining at exit too.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    from circusd.cli.circusctl import main as circusctl_main

    circusctl_main()
