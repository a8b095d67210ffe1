"""endpoint_owner: what the delegated user may do, and every way around it
that Circus left open (reference §5, case B07), tried as that user."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServiceUser, wait_for
from tests.security.conftest import audit_lines, proc_status

pytestmark = pytest.mark.root


@pytest.fixture
def owned(start_daemon, workdir: Path, owner: ServiceUser):
    """circusd as root, `owner` as endpoint_owner, one root watcher."""
    victim = workdir / "victim"
    victim.write_text("ORIG\n")
    victim.chmod(0o600)
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    daemon = start_daemon(f"""
        [circus]
        endpoint = ipc://{workdir}/ctl.sock
        pubsub_endpoint = ipc://{workdir}/pub.sock
        endpoint_owner = {owner.name}

        [watcher:rootw]
        cmd = sleep 300

        [env:rootw]
        SECRET = s3cret
        """)
    daemon.extra.update(victim=victim, shared=shared)
    return daemon


def as_owner(request_as, daemon, owner: ServiceUser, command: str, **props):
    return request_as(owner.name, daemon.endpoint, command, **props)


def refused(reply) -> str:
    assert isinstance(reply, dict), reply
    assert reply["status"] == "error", reply
    assert reply["errno"] == 3, reply
    assert reply["reason"].startswith("permission denied: "), reply
    return str(reply["reason"])


BYPASSES = {
    "gid of a privileged group": (
        "add",
        {
            "name": "x1",
            "cmd": "sh -c 'id > {shared}/x1'",
            "start": True,
            "options": {"uid": "{owner}", "gid": "0"},
        },
    ),
    "stream file written as root": (
        "add",
        {
            "name": "x2",
            "cmd": "echo PWNED",
            "start": True,
            "options": {
                "uid": "{owner}",
                "stdout_stream.class": "FileStream",
                "stdout_stream.filename": "{victim}",
            },
        },
    ),
    "stream class injection": (
        "add",
        {
            "name": "x3",
            "cmd": "sleep 1",
            "start": True,
            "options": {
                "uid": "{owner}",
                "stdout_stream": {
                    "class": "subprocess.Popen",
                    "filename": "{shared}/x3",
                },
            },
        },
    ),
    "hook run inside circusd": (
        "add",
        {
            "name": "x4",
            "cmd": "sleep 1",
            "start": True,
            "options": {"uid": "{owner}", "hooks.before_start": "os.abort"},
        },
    ),
    "working_dir it cannot enter": (
        "add",
        {
            "name": "x5",
            "cmd": "sh -c 'pwd > {shared}/x5'",
            "start": True,
            "options": {"uid": "{owner}", "working_dir": "{private}"},
        },
    ),
    "rlimit above its own": (
        "add",
        {
            "name": "x6",
            "cmd": "sh -c 'ulimit -Hn > {shared}/x6'",
            "start": True,
            "options": {"uid": "{owner}", "rlimit_nofile": "{too_many}"},
        },
    ),
    "watcher running as root": (
        "add",
        {
            "name": "x7",
            "cmd": "sh -c 'id > {shared}/x7'",
            "start": True,
            "options": {"uid": "0"},
        },
    ),
    "set on a root watcher": (
        "set",
        {"name": "rootw", "options": {"cmd": "sh -c 'id > {shared}/rootw'"}},
    ),
    "rm of a root watcher": ("rm", {"name": "rootw"}),
    "circusd's own environment": (
        "add",
        {
            "name": "x8",
            "cmd": "sh -c 'env > {shared}/x8'",
            "start": True,
            "options": {"uid": "{owner}", "copy_env": True},
        },
    ),
    "quit": ("quit", {}),
    "reloadconfig": ("reloadconfig", {}),
    "restart of everything": ("restart", {}),
}


def fill(value, names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: fill(item, names) for key, item in value.items()}
    return value


@pytest.mark.parametrize("bypass", sorted(BYPASSES))
def test_owner_is_refused(owned, request_as, owner, workdir, bypass):
    private = workdir / "private"
    private.mkdir(mode=0o700)
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    names = {"owner": owner.name, "shared": owned.extra["shared"],
             "victim": owned.extra["victim"], "private": private,
             "too_many": str(hard + 1)}  # fmt: skip
    command, props = BYPASSES[bypass]
    before = sorted(owned.ok("list")["watchers"])
    rootw_pids = owned.pids("rootw")

    reason = refused(as_owner(request_as, owned, owner, command, **fill(props, names)))

    time.sleep(0.3)  # anything wrongly started would have written by now
    assert sorted(owned.ok("list")["watchers"]) == before
    assert owned.pids("rootw") == rootw_pids
    assert list(owned.extra["shared"].iterdir()) == []
    assert owned.extra["victim"].read_text() == "ORIG\n"
    lines = audit_lines(owned.output())
    assert any(f"command={command}" in line and f"uid={owner.uid}" in line
               for line in lines), (reason, lines)  # fmt: skip
    assert re.search(r"pid=\d+", lines[-1])


def test_owner_may_operate_every_watcher(owned, request_as, owner):
    old = owned.pids("rootw")
    for command in ("stop", "start", "restart"):
        reply = as_owner(request_as, owned, owner, command, name="rootw",
                         waiting=True)  # fmt: skip
        assert reply["status"] == "ok", reply
    assert as_owner(request_as, owned, owner, "incr", name="rootw",
                    waiting=True)["numprocesses"] == 2  # fmt: skip
    assert as_owner(request_as, owned, owner, "signal", name="rootw",
                    signum="CONT")["status"] == "ok"  # fmt: skip
    assert set(owned.pids("rootw")).isdisjoint(old)


def test_owner_reads_but_never_other_users_env(owned, request_as, owner):
    options = as_owner(request_as, owned, owner, "options", name="rootw")
    assert options["options"]["env"] == {"SECRET": "(hidden)"}
    got = as_owner(request_as, owned, owner, "get", name="rootw", keys=["env"])
    assert got["options"]["env"] == {"SECRET": "(hidden)"}
    assert owned.ok("get", name="rootw", keys=["env"])["options"]["env"] == {
        "SECRET": "s3cret"
    }
    status = as_owner(request_as, owned, owner, "status")
    assert status["statuses"] == {"rootw": "active"}


@pytest.mark.parametrize("uid_form", ["name", "number", "absent"])
def test_owner_adds_watchers_that_run_as_itself(owned, request_as, owner, uid_form):
    options = {"name": {"uid": owner.name}, "number": {"uid": str(owner.uid)},
               "absent": {}}[uid_form]  # fmt: skip
    reply = as_owner(request_as, owned, owner, "add", name="mine",
                     cmd="sleep 300", start=True, options=options)  # fmt: skip
    assert reply["status"] == "ok", reply
    pid = wait_for(lambda: owned.pids("mine"), what="the owner's watcher")[0]
    status = proc_status(pid)
    assert status["Uid"].split() == [str(owner.uid)] * 4
    assert status["Gid"].split() == [str(owner.gid)] * 4
    assert sorted(map(int, status["Groups"].split())) == sorted(
        {owner.gid, owner.extra_gid}
    )
    assert audit_lines(owned.output(), "allowed")
    # The owner may change and remove its own watcher, within the same rules.
    assert as_owner(request_as, owned, owner, "set", name="mine",
                    options={"numprocesses": 2})["status"] == "ok"  # fmt: skip
    refused(as_owner(request_as, owned, owner, "set", name="mine",
                     options={"gid": "0"}))  # fmt: skip
    assert as_owner(request_as, owned, owner, "rm", name="mine",
                    waiting=True)["status"] == "ok"  # fmt: skip


def test_owner_may_use_its_own_supplementary_group(owned, request_as, owner):
    reply = as_owner(request_as, owned, owner, "add", name="grp", cmd="sleep 300",
                     start=True, options={"gid": owner.extra_group})  # fmt: skip
    assert reply["status"] == "ok", reply
    pid = wait_for(lambda: owned.pids("grp"), what="the owner's watcher")[0]
    assert proc_status(pid)["Gid"].split() == [str(owner.extra_gid)] * 4


def test_no_child_of_circusd_runs_with_a_gid_it_was_not_given(owned, request_as, owner):
    as_owner(request_as, owned, owner, "add", name="x1", cmd="sleep 300",
             start=True, options={"uid": owner.name, "gid": "0"})  # fmt: skip
    children = psutil.Process(owned.process.pid).children()
    rootw = set(owned.pids("rootw"))
    for child in children:
        if child.pid not in rootw:
            assert proc_status(child.pid)["Gid"].split()[0] != "0"


def test_owner_owns_the_endpoint_sockets(owned, owner):
    for name in ("ctl.sock", "pub.sock"):
        info = os.stat(owned.directory / name)
        assert info.st_uid == owner.uid
        assert info.st_mode & 0o777 == 0o600
