"""circusctl --ssh on Debian 12's own python3 and paramiko 2.12, the versions
the Debian package runs on (the test venv has a much newer paramiko).

The ipc tunnel overrides paramiko internals (TunnelTransport), and
PARAMIKO_TESTED says 2.12 is in the tested range: these tests are what makes
that true. circusctl runs from this checkout under /usr/bin/python3 -I, so
every module but circusd itself is Debian's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import REPO, Daemon
from tests.ssh.conftest import Client

pytestmark = pytest.mark.timeout(120)

DEBIAN_PYTHON = "/usr/bin/python3"
BOOKWORM_PARAMIKO = "2.12.0"
# Runs circusctl's main() with argv[2:], after checking where paramiko and
# zmq come from.
SCRIPT = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import paramiko, zmq
for module in (paramiko, zmq):
    assert module.__file__.startswith("/usr/lib/python3/dist-packages/"), module
assert paramiko.__version__ == sys.argv.pop(1), paramiko.__version__
from circusd.cli.circusctl import main
main(sys.argv[1:])
"""
SLEEPER = """\
[watcher:sleeper]
cmd = sleep 600
numprocesses = 2
"""


def debian_paramiko() -> str | None:
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", "import paramiko; print(paramiko.__version__)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def paramiko_version() -> str:
    version = debian_paramiko()
    if version is None:
        pytest.skip("Debian's python3-paramiko is not installed")
    if version != BOOKWORM_PARAMIKO:
        pytest.skip(f"{DEBIAN_PYTHON} has paramiko {version}, not bookworm's")
    return version


def debian_circusctl(
    client: Client, version: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", SCRIPT, str(REPO), version,
         "--ssh", client.target(), "--ssh-keyfile", str(client.key), *args],
        env=client.environment(PATH="/usr/sbin:/usr/bin:/sbin:/bin"),
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )  # fmt: skip


def test_status_over_an_ipc_tunnel_with_bookworms_paramiko(
    client: Client, start_daemon: Callable[..., Daemon], paramiko_version: str
) -> None:
    daemon = start_daemon(SLEEPER)

    result = debian_circusctl(
        client, paramiko_version, "--endpoint", daemon.endpoint, "status"
    )

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "sleeper  active  2" in result.stdout


def test_a_changing_command_over_an_ipc_tunnel_with_bookworms_paramiko(
    client: Client, start_daemon: Callable[..., Daemon], paramiko_version: str
) -> None:
    daemon = start_daemon(SLEEPER)

    result = debian_circusctl(
        client, paramiko_version, "--endpoint", daemon.endpoint,
        "incr", "sleeper", "--waiting",
    )  # fmt: skip

    assert (result.returncode, result.stdout) == (0, "3\n"), result.stderr
    assert len(daemon.pids("sleeper")) == 3


def test_list_over_a_tcp_tunnel_with_bookworms_paramiko(
    client: Client,
    start_daemon: Callable[..., Daemon],
    free_tcp_port: Callable[[], int],
    paramiko_version: str,
) -> None:
    control, pubsub = free_tcp_port(), free_tcp_port()
    start_daemon(
        f"[circus]\nendpoint = tcp://127.0.0.1:{control}\n"
        f"pubsub_endpoint = tcp://127.0.0.1:{pubsub}\n\n{SLEEPER}"
    )

    endpoint = f"tcp://127.0.0.1:{control}"
    result = debian_circusctl(client, paramiko_version, "--endpoint", endpoint, "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")
