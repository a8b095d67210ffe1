"""Where circusctl --ssh finds its keys and hosts: ~/.ssh/config (Host
aliases, HostName, User, Port, IdentityFile, ProxyJump), ssh-agent, and
key files with a passphrase asked on the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.ssh.conftest import Client, SSHServer, keygen, run_on_terminal

pytestmark = pytest.mark.timeout(60)

SLEEPER = "[watcher:sleeper]\ncmd = sleep 600\n"


def write_config(client: Client, text: str) -> None:
    path = client.ssh_dir / "config"
    path.write_text(text)
    path.chmod(0o600)


def test_a_host_alias_gives_hostname_user_port_and_identity_file(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    write_config(
        client,
        f"Host fleet-a\n  HostName 127.0.0.1\n  User root\n  Port {sshd.port}\n"
        f"  IdentityFile {client.key}\n",
    )

    result = client.run("--ssh", "fleet-a", "--endpoint", daemon.endpoint, "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")


def test_a_default_identity_file_in_home_is_used(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    shutil.copy(client.key, client.ssh_dir / "id_ed25519")

    result = client.run(
        "--ssh", client.target(), "--endpoint", daemon.endpoint, "numwatchers"
    )

    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr


def test_proxy_jump_reaches_the_host_through_another(
    client: Client, sshd: SSHServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    # The same sshd is both the jump host and, seen from itself, the target.
    write_config(
        client,
        f"Host jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {client.key}\n\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {client.key}\n  ProxyJump jump\n",
    )
    logins = sshd.log.count("Accepted publickey for root")

    result = client.run("--ssh", "inner", "--endpoint", daemon.endpoint, "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")
    assert sshd.log.count("Accepted publickey for root") == logins + 2


@pytest.fixture
def agent(client: Client) -> Iterator[str]:
    """A private ssh-agent; yields its socket path."""
    path = str(client.home / "agent.sock")
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "ssh-agent did not start"
        time.sleep(0.01)
    yield path
    process.terminate()
    process.wait(10)


def test_a_key_held_by_ssh_agent_is_used(
    client: Client, agent: str, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    subprocess.run(
        ["ssh-add", "-q", str(client.key)],
        env={**os.environ, "SSH_AUTH_SOCK": agent},
        check=True,
        capture_output=True,
    )
    client.env["SSH_AUTH_SOCK"] = agent

    result = client.run("--ssh", client.target(), "--endpoint", daemon.endpoint, "list")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sleeper\n", "")


def test_an_encrypted_identity_file_held_by_the_agent_is_never_asked_for(
    client: Client,
    sshd: SSHServer,
    agent: str,
    tmp_path: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(SLEEPER)
    key = tmp_path / "locked"
    sshd.authorize("root", keygen(key, passphrase="open sesame"))
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 'open sesame'\n")
    askpass.chmod(0o700)
    subprocess.run(
        ["ssh-add", "-q", str(key)],
        env={**os.environ, "SSH_AUTH_SOCK": agent, "SSH_ASKPASS": str(askpass),
             "SSH_ASKPASS_REQUIRE": "force"},
        check=True, capture_output=True, start_new_session=True,
    )  # fmt: skip
    write_config(client, f"Host *\n  IdentityFile {key}\n")
    client.env["SSH_AUTH_SOCK"] = agent

    output = run_on_terminal(
        client,
        ["--ssh", client.target(), "--endpoint", daemon.endpoint, "list"],
        prompt="passphrase",
        answers=[],
    )

    assert "passphrase" not in output
    assert output.rstrip().endswith("sleeper")


def test_an_encrypted_key_file_without_a_terminal_says_to_use_the_agent(
    client: Client, sshd: SSHServer, tmp_path: Path
) -> None:
    key = tmp_path / "locked"
    sshd.authorize("root", keygen(key, passphrase="open sesame"))

    result = client.run(
        "--ssh", client.target(), "--ssh-keyfile", str(key), "status",
        timeout=20,
    )  # fmt: skip

    assert result.returncode == 1
    assert "no terminal to ask its passphrase on" in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_encrypted_key_file_asks_its_passphrase_on_the_terminal(
    client: Client, sshd: SSHServer, tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(SLEEPER)
    key = tmp_path / "locked"
    sshd.authorize("root", keygen(key, passphrase="open sesame"))

    output = run_on_terminal(
        client,
        ["--ssh", client.target(), "--ssh-keyfile", str(key),
         "--endpoint", daemon.endpoint, "list"],
        prompt="Enter passphrase for key",
        answers=["wrong\n", "open sesame\n"],
    )  # fmt: skip

    assert output.count("Enter passphrase for key") == 2
    assert output.rstrip().endswith("sleeper")
