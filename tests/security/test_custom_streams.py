"""A stream class of one's own runs inside circusd, as root: only the
config file may name one. ``add`` and ``set`` refuse it, from root and
from the endpoint owner alike, and never import it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.root

# Importing this module leaves a mark: it must never be imported.
TRAP = """
import pathlib

pathlib.Path({mark!r}).write_text("imported")


class Stream:
    def __init__(self, **options):
        pass

    def __call__(self, data):
        pass
"""


@pytest.fixture
def trap(workdir: Path) -> Path:
    (workdir / "trap.py").write_text(TRAP.format(mark=str(workdir / "imported")))
    return workdir / "imported"


CUSTOM = {"class": "trap.Stream"}


def test_root_cannot_add_or_set_a_custom_stream_class(start_daemon, workdir, trap):
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300
        stdout_stream.class = FileStream
        stdout_stream.filename = {dir}/w.log
        """,
        env={"PYTHONPATH": str(workdir)},
    )
    replies = [
        daemon.call("add", name="x", cmd="sleep 1", start=True,
                    options={"stdout_stream": CUSTOM}),
        daemon.call("add", name="y", cmd="sleep 1",
                    options={"stderr_stream.class": "trap.Stream"}),
        daemon.call("set", name="w", options={"stdout_stream.class": "trap.Stream"}),
        daemon.call("set", name="w", options={"stdout_stream": CUSTOM}),
    ]  # fmt: skip
    for reply in replies:
        assert reply["status"] == "error", reply
        assert "only be named in the config file" in reply["reason"], reply
    assert not trap.exists()
    assert daemon.ok("list")["watchers"] == ["w"]


def test_a_custom_stream_from_the_config_file_cannot_be_changed_by_set(
    start_daemon, workdir, trap
):
    (workdir / "mine.py").write_text(
        "class Stream:\n    def __init__(self, **options):\n        pass\n\n"
        "    def __call__(self, data):\n        pass\n"
    )
    daemon = start_daemon(
        """
        [watcher:w]
        cmd = sleep 300
        stdout_stream.class = mine.Stream
        stdout_stream.level = 1
        """,
        env={"PYTHONPATH": str(workdir)},
    )
    reply = daemon.call("set", name="w", options={"stdout_stream.level": "2"})
    assert reply["status"] == "error", reply
    reply = daemon.call("set", name="w", options={"stdout_stream.class": "trap.Stream"})
    assert reply["status"] == "error", reply
    assert daemon.ok("get", name="w", keys=["stdout_stream"])["options"] == {
        "stdout_stream": {"class": "mine.Stream", "level": "1"}
    }
    # Other settings of the watcher may still change.
    assert daemon.ok("set", name="w", options={"numprocesses": 2}, waiting=True)
    wait_for(lambda: len(daemon.pids("w")) == 2, what="two processes")
    assert not trap.exists()


def test_the_owner_cannot_add_or_set_a_custom_stream_class(
    start_daemon, workdir, owner, trap, request_as
):
    daemon = start_daemon(
        f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}

        [watcher:other]
        cmd = sleep 300
        """,
        env={"PYTHONPATH": str(workdir)},
    )
    added = request_as(owner.name, daemon.endpoint, "add", name="mine",
                       cmd="sleep 300", options={"uid": owner.name})  # fmt: skip
    assert added["status"] == "ok", added
    for command, props in (
        ("add", {"name": "x", "cmd": "sleep 1", "options": {"stdout_stream": CUSTOM}}),
        ("set", {"name": "mine", "options": {"stdout_stream.class": "trap.Stream"}}),
    ):
        reply = request_as(owner.name, daemon.endpoint, command, **props)
        assert reply["status"] == "error", reply
        assert reply["reason"].startswith("permission denied: "), reply
    assert not trap.exists()
