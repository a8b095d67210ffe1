"""Endpoint adoption with Debian 12's own pyzmq 24 and libzmq 4.3.4, the
versions a Debian package of circusd runs on (the test venv has newer ones).

Both close an fd adopted with ZMQ_USE_FD when the ZeroMQ socket closes and
leave a socket file alone; circusd hands them a copy and keeps systemd's.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO

DEBIAN_PYTHON = "/usr/bin/python3"

SCRIPT = """
import asyncio, os, socket, sys, tempfile
sys.path.insert(0, sys.argv[1])
import zmq
from circusd.systemd import ActivatedContext, check_endpoint_fd

assert zmq.zmq_version() == "4.3.4", zmq.zmq_version()

async def serve(passed, endpoint):
    fd = passed.fileno()
    check_endpoint_fd(fd, "control", endpoint)
    context = ActivatedContext()
    context.adopt({endpoint: fd})
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    client = zmq.Context.instance().socket(zmq.DEALER)
    client.linger = 0
    client.connect(endpoint)
    client.send(b"ping")
    identity, body = await asyncio.wait_for(router.recv_multipart(), 5)
    await router.send_multipart([identity, b"pong"])
    assert client.poll(5000) and client.recv() == b"pong"
    client.close()
    router.close(linger=0)
    context.term()
    # systemd's socket is still open and listening.
    assert passed.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1

directory = tempfile.mkdtemp()
unix = socket.socket(socket.AF_UNIX)
unix.bind(directory + "/ctl.sock")
unix.listen()
inode = os.stat(directory + "/ctl.sock").st_ino
asyncio.run(serve(unix, "ipc://" + directory + "/ctl.sock"))
assert os.stat(directory + "/ctl.sock").st_ino == inode  # not bound anew
tcp = socket.create_server(("127.0.0.1", 0))
asyncio.run(serve(tcp, "tcp://127.0.0.1:%d" % tcp.getsockname()[1]))
print("adopted with pyzmq", zmq.__version__, "libzmq", zmq.zmq_version())
"""


def debian_pyzmq() -> str | None:
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", "import zmq; print(zmq.zmq_version())"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def test_endpoints_are_adopted_with_debian_pyzmq_and_libzmq_4_3_4():
    version = debian_pyzmq()
    if version is None:
        pytest.skip("Debian's python3-zmq is not installed")
    if version != "4.3.4":
        pytest.skip(f"{DEBIAN_PYTHON} has libzmq {version}, not Debian 12's 4.3.4")
    result = subprocess.run(
        [DEBIAN_PYTHON, "-I", "-c", SCRIPT, str(REPO)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "adopted with pyzmq 24.0.1 libzmq 4.3.4" in result.stdout
