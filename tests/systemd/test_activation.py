"""Socket activation without systemd (case B27): systemd-socket-activate binds
the sockets and execs circusd with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES,
as systemd does for a .socket unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest
import zmq

from tests.conftest import wait_for
from tests.systemd.conftest import (
    fd_flags,
    free_port,
    socket_inode,
    wait_listening,
)

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(
    ACTIVATE is None, reason="systemd-socket-activate is not installed"
)
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


def activate(*listen: str, names: str) -> list[str]:
    """The systemd-socket-activate prefix; it passes no environment of its
    own, so the variables circusd needs are named with -E."""
    assert ACTIVATE is not None
    args = [ACTIVATE, f"--fdname={names}"]
    args += [f"--listen={address}" for address in listen]
    args += ["-E", "PATH", "-E", "PYTHONPATH", "-E", "NOTIFY_SOCKET"]
    return args


def env_names(path: Path) -> set[str]:
    text = wait_for(lambda: path.exists() and path.read_text(), what=str(path))
    return {line.partition("=")[0] for line in text.splitlines() if "=" in line}


def fd_report(path: Path) -> dict:
    text = wait_for(lambda: path.exists() and path.read_text(), what=str(path))
    return json.loads(text)


FD_REPORT = f"{sys.executable} {Path(__file__).parent / 'fd_report.py'}"


@needs_activate
def test_control_and_pubsub_endpoints_are_adopted_from_systemd_over_ipc(
    launch, workdir
):
    control, pubsub = f"{workdir}/ctl.sock", f"{workdir}/pub.sock"
    run = launch(
        """
        [watcher:w]
        cmd = sleep 300
        """,
        prefix=activate(control, pubsub, names="control:pubsub"),
    )
    wait_listening(control)
    wait_listening(pubsub)
    inode_before = os.stat(control).st_ino
    sockets_before = {socket_inode(run.process.pid, fd) for fd in (3, 4)}

    # The first request wakes systemd-socket-activate, which execs circusd;
    # the request waits in the socket's backlog until circusd answers it.
    reply = run.call("status", timeout=10.0)
    assert reply["status"] == "ok", run.output()
    assert run.manager.wait_for("READY=1").pid == run.process.pid
    assert os.stat(control).st_ino == inode_before
    assert {socket_inode(run.process.pid, fd) for fd in (3, 4)} == sockets_before
    for fd in (3, 4):
        assert fd_flags(run.process.pid, fd) & os.O_CLOEXEC

    context = zmq.Context.instance()
    subscriber = context.socket(zmq.SUB)
    subscriber.linger = 0
    subscriber.setsockopt(zmq.SUBSCRIBE, b"watcher.")
    subscriber.connect(f"ipc://{pubsub}")
    try:
        wait_for(lambda: run.call("incr", name="w") and subscriber.poll(200), 10.0)
        topic, _ = subscriber.recv_multipart()
        assert topic.startswith(b"watcher.w.")
    finally:
        subscriber.close()

    run.stop()
    # systemd's socket files are systemd's: circusd leaves them in place.
    assert os.path.exists(control) and os.path.exists(pubsub)


@needs_activate
def test_control_endpoint_is_adopted_from_systemd_over_tcp(launch, workdir):
    port = free_port()
    run = launch(
        f"""
        [circus]
        endpoint = tcp://127.0.0.1:{port}
        pubsub_endpoint = ipc://{workdir}/pub.sock

        [watcher:w]
        cmd = sleep 300
        """,
        prefix=activate(f"127.0.0.1:{port}", names="control"),
    )
    wait_listening(("127.0.0.1", port))
    before = socket_inode(run.process.pid, 3)
    from tests.conftest import call

    assert call(f"tcp://127.0.0.1:{port}", "status", 10.0)["status"] == "ok"
    assert socket_inode(run.process.pid, 3) == before
    assert fd_flags(run.process.pid, 3) & os.O_CLOEXEC


@needs_activate
def test_socket_section_is_adopted_by_fdname_and_reaches_only_its_watchers(
    launch, workdir
):
    """B27: [socket:web] comes from systemd with no new bind; the watcher using
    it gets the same socket, the other watcher gets fds 0-2 only, and neither
    sees a LISTEN_, NOTIFY_SOCKET or WATCHDOG_ variable."""
    port = free_port()
    run = launch(
        f"""
        [socket:web]
        host = 127.0.0.1
        port = {port}

        [watcher:app]
        cmd = {FD_REPORT} {{dir}}/b27.json
        use_sockets = True
        copy_env = True

        [watcher:other]
        cmd = {FD_REPORT} {{dir}}/b27o.json
        copy_env = True
        """,
        prefix=activate(f"127.0.0.1:{port}", names="web"),
    )
    wait_listening(("127.0.0.1", port))
    before = socket_inode(run.process.pid, 3)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # wakes systemd-socket-activate
    run.manager.wait_for("READY=1")

    app = fd_report(workdir / "b27.json")
    other = fd_report(workdir / "b27o.json")
    assert before in app["fds"].values()
    assert sorted(other["fds"], key=int) == ["0", "1", "2"]
    for report in (app, other):
        assert not [k for k in report["env"] if k.startswith(SYSTEMD_VARIABLES)]
    assert socket_inode(run.process.pid, 3) == before
    assert fd_flags(run.process.pid, 3) & os.O_CLOEXEC
    listed = run.call("listsockets")["sockets"]
    assert [(s["name"], s["port"]) for s in listed] == [("web", port)]
    assert "adopted socket=web" in run.output()


def launcher(listen_pid: str, names: str, fd: int) -> list[str]:
    """A stand-in for a service manager: put ``fd`` at 3 and exec circusd with
    the LISTEN_ variables set, LISTEN_PID to ``listen_pid`` ("self" for the
    pid circusd will have, since exec keeps it)."""
    code = (
        "import os, sys; "
        f"os.dup2({fd}, 3); os.close({fd}) if {fd} != 3 else None; "
        f"pid = str(os.getpid()) if {listen_pid!r} == 'self' else {listen_pid!r}; "
        "os.environ.update(LISTEN_PID=pid, LISTEN_FDS='1', "
        f"LISTEN_FDNAMES={names!r}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code]


def test_fds_for_another_pid_are_ignored_and_never_taken_for_a_socket(launch, workdir):
    """B27 variant: LISTEN_PID names another process and fd 3 is a regular
    file; circusd says why it ignores the variables and binds itself."""
    port = free_port()
    decoy = workdir / "decoy"
    decoy.write_text("not a socket")
    with decoy.open("rb") as handle:
        run = launch(
            f"""
            [socket:web]
            host = 127.0.0.1
            port = {port}

            [watcher:app]
            cmd = {FD_REPORT} {{dir}}/b27.json
            use_sockets = True
            copy_env = True
            """,
            prefix=launcher("1", "web", handle.fileno()),
            pass_fds=(handle.fileno(),),
        )
    run.manager.wait_for("READY=1")
    output = run.output()
    assert "ignored LISTEN_FDS=1: LISTEN_PID=1 is not this process" in output
    assert "adopted" not in output
    app = fd_report(workdir / "b27.json")
    assert not [k for k in app["env"] if k.startswith("LISTEN_")]
    assert str(decoy) not in app["fds"].values()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # circusd bound the port itself


@pytest.mark.parametrize(
    ("names", "fd_kind", "config", "message"),
    [
        (
            "web",
            "file",
            "[socket:web]\nhost = 127.0.0.1\nport = 0\n",
            "systemd socket web (fd 3): fd 3 is not a socket but a regular file",
        ),
        (
            "web",
            "udp",
            "[socket:web]\nhost = 127.0.0.1\nport = 0\n",
            "systemd socket web (fd 3) is a ipv4 datagram socket (not listening), "
            "but [socket:web] describes a ipv4 stream socket",
        ),
        (
            "control",
            "tcp",
            "",
            "systemd socket control (fd 3) is a ipv4 stream socket (listening), "
            "but ipc://{dir}/ctl.sock needs a unix stream socket",
        ),
        (
            "pubsub",
            "unix",
            "",
            "systemd socket pubsub (fd 3) listens on {dir}/other.sock, but the "
            "config's pubsub endpoint is ipc://{dir}/pub.sock; make them the same",
        ),
        (
            "web",
            "unbound",
            "[socket:web]\nhost = 127.0.0.1\nport = 0\n",
            "systemd socket web (fd 3) is not listening",
        ),
    ],
    ids=["regular-file", "udp-for-tcp", "tcp-for-ipc", "other-path", "not-listening"],
)
def test_a_passed_fd_that_is_not_the_expected_socket_stops_the_start(
    launch, workdir, names, fd_kind, config, message
):
    if fd_kind == "file":
        passed = open(workdir / "decoy", "w+b")  # noqa: SIM115
    elif fd_kind == "udp":
        passed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        passed.bind(("127.0.0.1", 0))
    elif fd_kind == "tcp":
        passed = socket.create_server(("127.0.0.1", 0))
    elif fd_kind == "unix":
        passed = socket.socket(socket.AF_UNIX)
        passed.bind(f"{workdir}/other.sock")
        passed.listen()
    else:
        passed = socket.socket()
        passed.bind(("127.0.0.1", 0))
    try:
        run = launch(
            config + "\n[watcher:w]\ncmd = sleep 300\n",
            prefix=launcher("self", names, passed.fileno()),
            pass_fds=(passed.fileno(),),
        )
        assert run.process.wait(10) == 1
    finally:
        passed.close()
    assert message.replace("{dir}", str(workdir)) in run.output()
    assert run.manager.collect(0.1) == []  # never READY=1


def test_an_inetd_style_listening_socket_on_stdin_is_refused(launch, workdir):
    """StandardInput=socket passes a listening socket as fd 0 and no LISTEN_
    variables; circusd must not take it for a terminal or a log stream."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        run = launch("[watcher:w]\ncmd = sleep 300\n", stdin=server.fileno())
        assert run.process.wait(10) == 1
    finally:
        server.close()
    assert "standard input is a listening socket (StandardInput=socket?)" in (
        run.output()
    )


@needs_activate
def test_a_changed_socket_section_is_adopted_again_on_reload(launch, workdir):
    port = free_port()
    section = f"[socket:web]\nhost = 127.0.0.1\nport = {port}\n"
    # The command names the socket, so a change to it restarts the watcher.
    watcher = (
        f"\n[watcher:app]\ncmd = {FD_REPORT} {{dir}}/app.json $(circus.sockets.web)\n"
    )
    run = launch(section + watcher, prefix=activate(f"127.0.0.1:{port}", names="web"))
    wait_listening(("127.0.0.1", port))
    before = socket_inode(run.process.pid, 3)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    run.manager.wait_for("READY=1")
    assert before in fd_report(workdir / "app.json")["fds"].values()

    (workdir / "app.json").unlink()
    config = workdir / "circus.ini"
    config.write_text(config.read_text().replace("port =", "backlog = 64\nport ="))
    run.process.send_signal(signal.SIGHUP)
    run.manager.wait_for("RELOADING=1")
    assert "STATUS" not in run.manager.wait_for("READY=1").fields  # accepted
    assert before in fd_report(workdir / "app.json")["fds"].values()
    assert run.output().count("adopted socket=web") == 2
    assert "closed socket=web" in run.output()
    assert socket_inode(run.process.pid, 3) == before
