"""The stats endpoint from systemd (FileDescriptorName=stats), as with
systemd-socket-activate: circusd does not bind it, its helper serves the
very socket systemd made."""

from __future__ import annotations

import os

import psutil
import pytest
import zmq

from tests.conftest import wait_for
from tests.systemd.conftest import socket_inode, wait_listening
from tests.systemd.test_activation import activate, needs_activate

pytestmark = pytest.mark.timeout(60)


@needs_activate
def test_stats_endpoint_is_adopted_from_systemd_and_served_by_the_helper(
    launch, workdir
):
    control, stats = f"{workdir}/ctl.sock", f"{workdir}/stats.sock"
    run = launch(
        f"""
        [circus]
        endpoint = ipc://{control}
        pubsub_endpoint = ipc://{workdir}/pub.sock
        stats_endpoint = ipc://{stats}

        [watcher:w]
        cmd = sleep 300
        """,
        prefix=activate(control, stats, names="control:stats"),
    )
    wait_listening(stats)
    inode = os.stat(stats).st_ino
    assert run.call("status", timeout=10.0)["status"] == "ok", run.output()
    systemd_socket = socket_inode(run.process.pid, 4)

    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.linger = 0
    subscriber.setsockopt(zmq.SUBSCRIBE, b"stat.w.")
    subscriber.connect(f"ipc://{stats}")
    try:
        assert subscriber.poll(10_000), run.output()
        topic, _ = subscriber.recv_multipart()
    finally:
        subscriber.close()

    (helper,) = [
        p
        for p in psutil.Process(run.process.pid).children()
        if "circusd.metrics.helper" in p.cmdline()
    ]
    helper_sockets = {
        os.readlink(f"/proc/{helper.pid}/fd/{fd}")
        for fd in os.listdir(f"/proc/{helper.pid}/fd")
    }
    assert topic.startswith(b"stat.w.")
    assert systemd_socket in helper_sockets  # the same socket, not a new one
    assert os.stat(stats).st_ino == inode
    assert "systemd socket stats not used" not in run.output()
    run.stop()
    assert os.path.exists(stats)  # systemd's file: left in place
    wait_for(lambda: not helper.is_running(), what="the helper to end")
