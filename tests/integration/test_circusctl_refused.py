"""circusctl run by a user who may not connect to the control socket says
so, with the socket's owner, group and mode, and does not claim that the
daemon is down (the packaged socket is root:circus 0660: a user outside the
group meets this first)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import REPO, Daemon, ServiceUser

pytestmark = pytest.mark.root

# The test user cannot run the venv's interpreter (under /root): it runs
# circusctl from this checkout on Debian's python3.
SCRIPT = "from circusd.cli.circusctl import main; main()"


def test_a_user_refused_by_the_socket_mode_is_told_who_may_connect(
    start_daemon: Callable[..., Daemon], test_user: ServiceUser
) -> None:
    daemon = start_daemon("[watcher:w]\ncmd = sleep 300\n")
    path = daemon.endpoint.removeprefix("ipc://")
    mode = os.stat(path).st_mode & 0o777
    assert mode & 0o006 == 0, oct(mode)  # the test needs a socket closed to others

    result = subprocess.run(
        ["/usr/sbin/runuser", "-u", test_user.name, "--",
         "/usr/bin/python3", "-c", SCRIPT, "--endpoint", daemon.endpoint, "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd="/",
    )  # fmt: skip

    assert result.returncode == 1, result.stdout
    assert result.stderr == (
        f"circusctl: error: cannot reach {daemon.endpoint}: permission denied on "
        f"{path} (owner root, group root, mode {mode:04o}); this user may not "
        "connect to it\n"
    )
