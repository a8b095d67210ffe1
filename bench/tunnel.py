"""The `ssh` scenario: circusctl status through an SSH tunnel against direct.

circusd only. A private sshd on loopback (tests/ssh/sshd.py, the test
suite's recipe) logs root in with a key made for the run and a known_hosts
entry for its own host key, both named in a private ssh_config. The daemon
runs one watcher, on an ipc endpoint or on tcp on loopback. bench/ssh_probe.py
then times, sample by sample, the SSH login, the channel, the requests of
`circusctl status` and the same requests made directly, and how long sshd
takes after the login before it answers anything; and the whole
`circusctl status` process is run both ways, alternately.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import scenarios
from daemons import CircusDaemon, Daemon, DaemonError, sleepers

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
from tests.ssh.sshd import SSHD, free_port, keygen, start_sshd  # noqa: E402

PROBE = Path(__file__).resolve().parent / "ssh_probe.py"
KINDS = ("ipc", "tcp")
HOST = "bench"  # the Host entry of the private ssh_config
WATCHER = "sleeper"
PROBE_TIMEOUT = 600.0
WARMUP = 3  # samples not kept: the first connections warm caches


def unavailable() -> str | None:
    """Why the scenario cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (sshd logs root in with the run's own key)"
    if not SSHD.exists():
        return f"sshd is missing ({SSHD}): apt-get install openssh-server"
    return None


def measure(daemon: Daemon, kind: str, samples: int, cli_runs: int) -> scenarios.Cells:
    cell = f"ssh.{kind}"
    reason = unavailable()
    if reason is not None:
        return {cell: {"skipped": reason}}
    if not isinstance(daemon, CircusDaemon):
        raise DaemonError(f"{daemon.name} has no circusctl --ssh")
    if kind == "tcp":
        daemon.control_port = free_port()
    daemon.start(sleepers(1, WATCHER))
    daemon.wait_ready()
    server = start_sshd(daemon.directory / "sshd")
    try:
        config = _client_files(daemon.directory / "client", server)
        result = _probe(config, daemon.endpoint, samples)
        result.update(_cli(daemon, config, cli_runs))
    finally:
        server.stop()
    return {cell: result}


def _client_files(directory: Path, server: Any) -> Path:
    """A key root accepts, a known_hosts and an ssh_config naming both."""
    directory.mkdir(mode=0o700)
    key = directory / "id_ed25519"
    server.authorize("root", keygen(key))
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(server.known_hosts_line)
    config = directory / "ssh_config"
    config.write_text(
        f"Host {HOST}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {server.port}\n"
        "  User root\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile none\n"
    )
    return config


def _environment() -> dict[str, str]:
    """No agent, and the circusd under test first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    source = os.environ.get("CIRCUSD_PYTHONPATH")  # set by --circusd-ref
    if source:
        env["PYTHONPATH"] = source
    return env


def _probe(config: Path, endpoint: str, samples: int) -> dict[str, Any]:
    argv = [sys.executable, str(PROBE), "--ssh-config", str(config)]
    argv += ["--target", HOST, "--endpoint", endpoint, "--watcher", WATCHER]
    argv += ["--samples", str(samples), "--warmup", str(WARMUP)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        env=_environment(),
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-2:])
        raise DaemonError(f"ssh_probe.py exited {done.returncode}: {tail}")
    answer = json.loads(done.stdout)
    figures: dict[str, Any] = answer["samples"]
    figures["tunnel_ms"] = _sums(figures, "channel_ms", "first_ms", "second_ms")
    figures["direct_ms"] = _sums(
        figures, "direct_connect_ms", "direct_first_ms", "direct_second_ms"
    )
    pairs = zip(figures["tunnel_ms"], figures["direct_ms"], strict=True)
    figures["added_ms"] = [tunnel - direct for tunnel, direct in pairs]
    figures["post_auth_ms"] = _differences(figures, "ready_ms", "round_trip_ms")
    figures["added_after_ready_ms"] = _differences(figures, "added_ms", "post_auth_ms")
    figures["failed"] = len(answer["failures"])
    figures["failures"] = answer["failures"]
    return figures


def _differences(figures: dict[str, Any], minuend: str, subtrahend: str) -> list[float]:
    pairs = zip(figures[minuend], figures[subtrahend], strict=True)
    return [first - second for first, second in pairs]


def _sums(figures: dict[str, Any], *fields: str) -> list[float]:
    columns = [figures[field] for field in fields]
    return [sum(values) for values in zip(*columns, strict=True)]


def _cli(daemon: CircusDaemon, config: Path, runs: int) -> dict[str, Any]:
    """The whole `circusctl status` process over SSH and direct, alternately."""
    direct = daemon.cli_status()
    tunnelled = [direct[0], "--ssh-config", str(config), "--ssh", HOST, *direct[1:]]
    env = _environment()
    times: dict[str, list[float]] = {"cli_ssh_ms": [], "cli_direct_ms": []}
    for _ in range(runs):
        for field, argv in (("cli_ssh_ms", tunnelled), ("cli_direct_ms", direct)):
            took, _out = scenarios.run_cli(daemon, argv, env)
            times[field].append(took * 1000)
    return times
