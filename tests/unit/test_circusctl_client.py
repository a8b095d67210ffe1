"""The client library: deadlines, reply matching, endpoint checks, events.

The server side is a ZeroMQ ROUTER (or PUB) run by the test in a thread, so
each test decides exactly what the "daemon" answers.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from circusd.client import (
    IPC_PATH_LIMIT,
    CallTimeout,
    CircusClient,
    DaemonUnreachable,
    InvalidEndpoint,
    ReplyError,
    parse_endpoint,
    subscribe,
)

pytestmark = pytest.mark.timeout(20)

# Answers one request: gets the decoded request, returns the replies to send.
Handler = Callable[[dict[str, Any]], list[dict[str, Any]]]


class Router:
    """A ROUTER on an ipc endpoint that answers through a handler, in a thread."""

    def __init__(
        self, endpoint: str, handler: Handler, chatter: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.chatter = chatter  # send a wrong-id reply this often, if set
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Router:
        self._thread.start()
        assert self._ready.wait(5), "test ROUTER did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._ready.set()
        peer: bytes | None = None
        try:
            while not self._stop.is_set():
                if sock.poll(int((self.chatter or 0.05) * 1000)):
                    peer, payload = sock.recv_multipart()
                    request = json.loads(payload)
                    self.requests.append(request)
                    for reply in self.handler(request):
                        sock.send_multipart([peer, json.dumps(reply).encode()])
                elif self.chatter and peer is not None:
                    wrong = {"status": "ok", "id": "someone-else"}
                    sock.send_multipart([peer, json.dumps(wrong).encode()])
        finally:
            sock.close(linger=0)


@pytest.fixture
def ipc_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield f"ipc://{tmp_path_factory.mktemp('client')}/ctl.sock"


def test_call_returns_the_reply_whose_id_matches(ipc_endpoint: str) -> None:
    def answer(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"status": "ok", "id": "an-older-request", "watchers": ["stale"]},
            {"status": "ok", "id": request["id"], "watchers": ["web"]},
        ]

    with Router(ipc_endpoint, answer) as router, CircusClient(ipc_endpoint) as client:
        reply = client.call("list", name="web")

    assert reply["watchers"] == ["web"]
    assert router.requests[0]["command"] == "list"
    assert router.requests[0]["properties"] == {"name": "web"}


def test_each_call_uses_a_fresh_id(ipc_endpoint: str) -> None:
    def echo(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"status": "ok", "id": request["id"]}]

    with Router(ipc_endpoint, echo) as router, CircusClient(ipc_endpoint) as client:
        client.call("numwatchers")
        client.call("numwatchers")

    first, second = (request["id"] for request in router.requests)
    assert first != second


def test_call_to_a_server_that_never_answers_ends_within_the_timeout(
    ipc_endpoint: str,
) -> None:
    with (
        Router(ipc_endpoint, lambda request: []),
        CircusClient(ipc_endpoint, timeout=0.5) as client,
    ):
        started = time.monotonic()
        with pytest.raises(CallTimeout, match="no reply within 0.5 s"):
            client.call("status")
        elapsed = time.monotonic() - started

    assert 0.45 <= elapsed < 0.9


def test_replies_with_another_id_do_not_extend_the_timeout(
    ipc_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Wrong-id replies every 0.2 s: a client that restarted its wait on each
    # of them would never give up.
    caplog.set_level(logging.DEBUG, logger="circusd.client")
    with (
        Router(ipc_endpoint, lambda request: [], chatter=0.2),
        CircusClient(ipc_endpoint, timeout=1.0) as client,
    ):
        started = time.monotonic()
        with pytest.raises(CallTimeout):
            client.call("status")
        elapsed = time.monotonic() - started

    assert 0.95 <= elapsed < 1.4
    discarded = [r for r in caplog.records if r.getMessage().startswith("discarded")]
    assert len(discarded) >= 3


def test_error_reply_raises_reply_error_with_reason_and_errno(
    ipc_endpoint: str,
) -> None:
    def refuse(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "status": "error",
                "reason": "program nope not found",
                "errno": 3,
                "id": request["id"],
            }
        ]

    with Router(ipc_endpoint, refuse), CircusClient(ipc_endpoint) as client:
        with pytest.raises(ReplyError) as caught:
            client.call("status", name="nope")

    assert caught.value.reason == "program nope not found"
    assert caught.value.errno == 3


def test_single_watcher_status_word_is_not_an_error(ipc_endpoint: str) -> None:
    def active(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"status": "active", "id": request["id"]}]

    with Router(ipc_endpoint, active), CircusClient(ipc_endpoint) as client:
        assert client.call("status", name="web")["status"] == "active"


def test_cast_sends_a_cast_message_without_an_id(ipc_endpoint: str) -> None:
    with Router(ipc_endpoint, lambda request: []) as router:
        with CircusClient(ipc_endpoint) as client:
            client.cast("restart", name="web")
        deadline = time.monotonic() + 5
        while not router.requests and time.monotonic() < deadline:
            time.sleep(0.01)

    assert router.requests == [
        {"command": "restart", "properties": {"name": "web"}, "msg_type": "cast"}
    ]


def test_missing_ipc_socket_fails_before_sending_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    client = CircusClient("ipc://run/ctl.sock", timeout=5)
    started = time.monotonic()
    with pytest.raises(DaemonUnreachable) as caught:
        client.call("status")

    assert time.monotonic() - started < 0.5
    assert f"no socket at {tmp_path}/run/ctl.sock" in str(caught.value)
    assert "not running" in str(caught.value)


def test_stale_ipc_socket_file_is_reported_as_refused(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))  # closed without unlinking: nobody listens
    client = CircusClient(f"ipc://{path}", timeout=5)
    started = time.monotonic()
    with pytest.raises(DaemonUnreachable, match="connection refused"):
        client.call("status")
    assert time.monotonic() - started < 0.5


def test_a_file_that_is_not_a_socket_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    path.write_text("")
    with pytest.raises(DaemonUnreachable, match="is not a socket"):
        CircusClient(f"ipc://{path}").call("status")


def test_refused_tcp_endpoint_fails_at_once() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DaemonUnreachable, match="connection refused"):
        CircusClient(f"tcp://127.0.0.1:{port}", timeout=5).call("status")
    assert time.monotonic() - started < 0.5


def test_overlong_ipc_path_is_refused_with_the_limit() -> None:
    path = "/tmp/" + "a" * IPC_PATH_LIMIT + ".sock"
    with pytest.raises(InvalidEndpoint) as caught:
        CircusClient(f"ipc://{path}")
    assert "107 bytes" in str(caught.value)
    assert path in str(caught.value)


def test_ipc_path_of_exactly_the_limit_is_accepted() -> None:
    path = "/" + "a" * (IPC_PATH_LIMIT - 1)
    assert parse_endpoint(f"ipc://{path}").path == path


@pytest.mark.parametrize(
    "endpoint",
    [
        "",
        "127.0.0.1:5555",
        "udp://127.0.0.1:5555",
        "tcp://127.0.0.1",
        "tcp://*:5555",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:99999",
        "ipc://",
    ],
)
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidEndpoint, match="invalid endpoint"):
        parse_endpoint(endpoint)


def test_relative_ipc_path_is_resolved_against_the_given_directory() -> None:
    parsed = parse_endpoint("ipc://run/../ctl.sock", cwd="/srv/app")
    assert parsed.address == "ipc:///srv/app/ctl.sock"


def test_ipv6_tcp_endpoint_is_parsed() -> None:
    parsed = parse_endpoint("tcp://[::1]:5555")
    assert (parsed.host, parsed.port) == ("::1", 5555)


def test_subscribe_yields_events_with_topic_and_data(ipc_endpoint: str) -> None:
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.bind(ipc_endpoint)
    try:
        events = subscribe(ipc_endpoint, ["watcher.web."])
        payload = json.dumps({"process_pid": 42, "time": 1.5}).encode()

        def publish_until_received() -> None:
            # PUB drops messages until the subscription has arrived.
            while not received.is_set():
                publisher.send_multipart([b"watcher.other.spawn", payload])
                publisher.send_multipart([b"watcher.web.spawn", payload])
                time.sleep(0.02)

        received = threading.Event()
        sender = threading.Thread(target=publish_until_received, daemon=True)
        sender.start()
        event = next(events)
        received.set()
        sender.join(5)
        events.close()
    finally:
        publisher.close(linger=0)

    assert event.topic == "watcher.web.spawn"
    assert (event.watcher, event.event) == ("web", "spawn")
    assert event.data == {"process_pid": 42, "time": 1.5}


def test_subscribe_to_a_missing_endpoint_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="no socket at"):
        subscribe(f"ipc://{tmp_path}/pub.sock")
