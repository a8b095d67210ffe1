"""Output files: owned by the watcher's user, never written through a link
that user controls (case B04)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from tests.conftest import ServiceUser, wait_for

pytestmark = pytest.mark.root

# About 20 KB a second of output, so that size rotation comes quickly.
BURST = (
    'sh -c \'while :; do head -c 1000 /dev/zero | tr "\\\\0" x; echo; '
    "sleep 0.05; done'"
)


@pytest.fixture
def victim(workdir: Path) -> Path:
    path = workdir / "victim"
    path.write_text("ORIG\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def logs(workdir: Path, owner: ServiceUser) -> Path:
    path = workdir / "logs"
    path.mkdir()
    os.chown(path, owner.uid, owner.gid)
    return path


def untouched(victim: Path) -> bool:
    info = victim.stat()
    return victim.read_text() == "ORIG\n" and stat.S_IMODE(info.st_mode) == 0o600


def swap_for_link(path: Path, target: Path, owner: ServiceUser) -> None:
    """What the watcher's user can do in its own directory."""
    path.unlink()
    path.symlink_to(target)
    os.lchown(path, owner.uid, owner.gid)


def test_output_file_belongs_to_the_watchers_user(start_daemon, logs, owner):
    out = logs / "out.log"
    start_daemon(f"""
        [watcher:w]
        cmd = sh -c 'echo hello; exec sleep 300'
        uid = {owner.name}
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        """)
    wait_for(lambda: out.exists() and out.read_text() == "hello\n")
    info = out.stat()
    assert (info.st_uid, info.st_gid) == (owner.uid, owner.gid)
    assert stat.S_IMODE(info.st_mode) == 0o640


def test_a_rotating_stream_refuses_a_planted_link_and_resumes_when_it_is_gone(
    start_daemon, logs, owner, victim
):
    out = logs / "out.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {BURST}
        uid = {owner.name}
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        stdout_stream.max_bytes = 4096
        stdout_stream.backup_count = 1
        """)
    wait_for(lambda: (logs / "out.log.1").exists(), what="a first rotation")
    swap_for_link(out, victim, owner)
    # The stream sees that its name now holds something else and reopens
    # it: never through the link, so it drops output and says so.
    wait_for(lambda: f"cannot open output file={out}" in daemon.output(),
             what="the refusal in the log")  # fmt: skip
    assert untouched(victim)
    out.unlink()  # the user takes the link away: output comes back
    wait_for(lambda: out.exists() and out.stat().st_size > 0, what="new output")
    wait_for(lambda: "output file works again" in daemon.output(), what="recovery")
    assert not out.is_symlink() and out.stat().st_uid == owner.uid
    assert not (logs / "out.log.1").is_symlink()
    assert untouched(victim)


@pytest.mark.parametrize("kind", ["FileStream", "WatchedFileStream"])
def test_reopen_refuses_a_planted_link(start_daemon, logs, owner, victim, kind):
    out = logs / "out.log"
    daemon = start_daemon(f"""
        [watcher:w]
        cmd = {BURST}
        uid = {owner.name}
        stdout_stream.class = {kind}
        stdout_stream.filename = {out}
        """)
    wait_for(lambda: out.exists() and out.stat().st_size > 0)
    swap_for_link(out, victim, owner)
    daemon.process.send_signal(signal.SIGUSR1)  # "reopen your files"
    wait_for(lambda: f"cannot open output file={out}" in daemon.output(),
             what="the refusal in the log")  # fmt: skip
    assert untouched(victim)
    assert daemon.process.poll() is None


def test_link_in_a_directory_the_user_controls_is_refused(
    start_daemon, workdir, logs, owner, victim
):
    rootonly = workdir / "rootonly"
    rootonly.mkdir(mode=0o755)
    (logs / "sub").symlink_to(rootonly)
    os.lchown(logs / "sub", owner.uid, owner.gid)
    daemon = start_daemon("""
        [watcher:other]
        cmd = sleep 300
        """)
    reply = daemon.call("add", name="w", cmd="sleep 300", options={
        "uid": owner.name, "stdout_stream.class": "FileStream",
        "stdout_stream.filename": f"{logs}/sub/out.log"})  # fmt: skip
    assert reply["status"] == "error", reply
    assert "symbolic link" in reply["reason"]
    assert not (rootonly / "out.log").exists()


def test_a_hard_link_to_another_file_is_refused(start_daemon, logs, owner, victim):
    os.link(victim, logs / "out.log")
    daemon = start_daemon("""
        [watcher:other]
        cmd = sleep 300
        """)
    reply = daemon.call("add", name="w", cmd="echo PWNED", start=True, options={
        "uid": owner.name, "stdout_stream.class": "FileStream",
        "stdout_stream.filename": f"{logs}/out.log"})  # fmt: skip
    assert reply["status"] == "error", reply
    assert "hard links" in reply["reason"]
    assert untouched(victim)


def test_the_owner_may_reopen_files_and_a_reader_may_not(
    start_daemon, workdir, logs, owner, intruder, request_as
):
    out = logs / "out.log"
    daemon = start_daemon(f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}
        readonly_group = {intruder.gid}

        [watcher:w]
        cmd = sh -c 'echo once; exec sleep 300'
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        """)
    wait_for(lambda: out.exists() and out.stat().st_size > 0, what="output")
    out.rename(logs / "out.log.1")
    denied = request_as(intruder.name, daemon.endpoint, "reopen", name="w")
    assert denied["reason"].startswith("permission denied: 'reopen'"), denied
    assert not out.exists()
    reply = request_as(owner.name, daemon.endpoint, "reopen")
    assert reply["status"] == "ok", reply
    assert out.exists()
