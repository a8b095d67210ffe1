"""TcpPeers: the uid behind a new loopback connection, from a fake socket
table; it answers only when a single user is possible."""

from __future__ import annotations

import socket

from circusd.control.auth import TcpPeers, _Entry

HOST = socket.inet_aton("127.0.0.1")
PORT = 5555


class Table:
    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self._inode = 100

    def connect(
        self,
        uid: int,
        port: int,
        client_state: str = "01",
        received: int | None = None,
    ) -> int:
        """A client of ``uid`` on ``port`` (``received``: bytes the server end
        got, when the kernel tells); returns the server end's inode."""
        self._inode += 2
        server = (HOST, PORT)
        client = (HOST, port)
        self.entries.append(_Entry(server, client, "01", 0, self._inode, received))
        client_inode = 0 if client_state == "06" else self._inode + 1
        self.entries.append(_Entry(client, server, client_state, uid, client_inode))
        return self._inode

    def close(self, inode: int) -> None:
        server = next(e for e in self.entries if e.inode == inode)
        self.entries = [
            e for e in self.entries
            if e is not server and (e.local, e.remote) != (server.remote, server.local)
        ]  # fmt: skip

    def __call__(self) -> list[_Entry]:
        return list(self.entries)


def peers(table: Table) -> TcpPeers:
    tracker = TcpPeers(read_table=table)
    tracker.listen(HOST, PORT)
    return tracker


def test_a_single_connection_is_its_clients_uid():
    table = Table()
    table.connect(1001, 40001)
    assert peers(table).identify("127.0.0.1", insecure=False).uid == 1001


def test_two_users_connecting_at_once_are_not_guessed():
    table = Table()
    table.connect(1001, 40001)
    table.connect(0, 40002)
    assert peers(table).identify("127.0.0.1", insecure=False).uid is None


def test_answered_connections_do_not_make_new_ones_ambiguous():
    table = Table()
    tracker = peers(table)
    table.connect(1001, 40001)
    assert tracker.identify("127.0.0.1", insecure=False).uid == 1001
    table.connect(0, 40002)  # the 1001 connection is still open
    assert tracker.identify("127.0.0.1", insecure=False).uid == 0
    table.connect(1001, 40003)
    assert tracker.identify("127.0.0.1", insecure=False).uid == 1001


def test_a_closed_connection_never_vouches_for_a_new_one():
    table = Table()
    tracker = peers(table)
    first = table.connect(1001, 40001)
    assert tracker.identify("127.0.0.1", insecure=False).uid == 1001
    table.close(first)
    table.connect(1001, 40002)  # pending
    table.connect(0, 40003)  # pending
    assert tracker.identify("127.0.0.1", insecure=False).uid is None


def test_a_client_end_in_time_wait_is_not_trusted():
    table = Table()
    table.connect(0, 40001, client_state="06")
    caller = peers(table).identify("127.0.0.1", insecure=False)
    assert caller.uid is None


def test_peer_on_another_host_is_anonymous_unless_declared_insecure():
    table = Table()
    remote = (socket.inet_aton("192.0.2.7"), 40001)
    table.entries.append(_Entry((HOST, PORT), remote, "01", 0, 500))
    tracker = peers(table)
    assert tracker.identify("192.0.2.7", insecure=False).uid is None
    table.entries.append(_Entry((HOST, PORT), (remote[0], 40002), "01", 0, 502))
    assert tracker.identify("192.0.2.7", insecure=True).anonymous_network


def test_a_connection_that_sent_no_greeting_yet_hides_nobody():
    table = Table()
    table.connect(1002, 40001, received=0)  # held open by another user
    table.connect(1002, 40002, received=10)  # half a greeting
    table.connect(1001, 40003, received=90)  # greeting and READY: being asked
    assert peers(table).identify("127.0.0.1", insecure=False).uid == 1001


def test_a_connection_its_client_closed_keeps_its_user():
    # Circus's circusctl opens a DEALER to the event stream beside its SUB;
    # the DEALER is dropped after its handshake and closes first, leaving
    # the server end in CLOSE_WAIT while the SUB is asked about.
    table = Table()
    tracker = peers(table)
    dealer = table.connect(0, 40001)
    assert tracker.identify("127.0.0.1", insecure=False).uid == 0
    client = next(e for e in table.entries if e.local == (HOST, 40001))
    table.entries.remove(client)
    server = next(e for e in table.entries if e.inode == dealer)
    table.entries[table.entries.index(server)] = _Entry(
        server.local, server.remote, "08", 0, dealer
    )
    table.connect(0, 40002)
    assert tracker.identify("127.0.0.1", insecure=False).uid == 0


def test_a_connection_closed_by_its_client_before_it_was_asked_hides_nobody():
    table = Table()
    table.entries.append(_Entry((HOST, PORT), (HOST, 40001), "08", 0, 700))
    table.connect(1001, 40002)
    assert peers(table).identify("127.0.0.1", insecure=False).uid == 1001


def test_two_readers_at_once_are_let_in_where_only_reading_is_asked_about():
    table = Table()
    tracker = peers(table)
    table.connect(1001, 40001)
    table.connect(1002, 40002)
    readers = {1001, 1002}

    def reader(caller):
        return caller.uid in readers

    first = tracker.identify("127.0.0.1", insecure=False, enough=reader)
    second = tracker.identify("127.0.0.1", insecure=False, enough=reader)
    assert {first.uid, second.uid} == readers


def test_a_reader_and_a_stranger_at_once_are_still_not_guessed():
    table = Table()
    table.connect(1001, 40001)
    table.connect(1003, 40002)
    caller = peers(table).identify(
        "127.0.0.1", insecure=False, enough=lambda c: c.uid == 1001
    )
    assert caller.uid is None
