"""circusd's own Python helpers (circusd-stats, plugins, the web console) run
as ``python -m ...``, which puts the working directory first on the module
path. circusd started by root from a directory another user can write to
(a shared project directory, /tmp) must not import that user's modules
into those root processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import wait_for, write_config
from tests.security.conftest import Intruder

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

CIRCUSD = Path(sys.executable).with_name("circusd")  # the installed script
PLANTED = """\
import os
open(os.path.join(os.path.dirname(__file__), "..", "IMPORTED-%d" % os.getuid()), "w")
"""


def test_modules_planted_in_circusds_working_directory_are_never_imported(
    workdir: Path, intruder: Intruder
) -> None:
    if not CIRCUSD.exists():
        pytest.skip(f"{CIRCUSD} is not installed")
    theirs = workdir / "shared"
    theirs.mkdir()
    for package in ("circusd", "psutil", "zmq"):
        (theirs / package).mkdir()
        (theirs / package / "__init__.py").write_text(PLANTED)
    for path in (theirs, *theirs.rglob("*")):
        os.chown(path, intruder.uid, intruder.gid)
    config = write_config(
        workdir,
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        stats_endpoint = ipc://{workdir}/stats.sock

        [watcher:w]
        cmd = sleep 300

        [plugin:statsd]
        use = circus.plugins.statsd.StatsdEmitter
        """,
    )
    log = workdir / "circusd.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [str(CIRCUSD), str(config), "--log-level", "debug"],
            cwd=theirs,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        text = log.read_text(errors="replace")
        return "plugin ready plugin=statsd" in text and "serving stats_endpoint" in text

    try:
        wait_for(
            lambda: ready() or list(theirs.glob("IMPORTED-*")),
            what="the plugin and circusd-stats to start",
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)

    assert not list(theirs.glob("IMPORTED-*"))
    assert ready(), textwrap.shorten(log.read_text(errors="replace"), 2000)
