"""TcpPeers' reasoning: which connection a ZAP request may be about, from the
connections a socket's monitor reported (a fake report source here; the
real monitor is in test_tcp_accepts.py). It answers only when a single user
is possible."""

from __future__ import annotations

import socket

from circusd.control.accepts import REMOTE, UNKNOWN, Connection, _same_host, unseen
from circusd.control.auth import TcpPeers

HOST = socket.inet_aton("127.0.0.1")
ELSEWHERE = socket.inet_aton("192.0.2.7")


class Reports:
    """What a socket's monitor would have told: the connections open that
    sent their greeting, and those gone since the last look."""

    def __init__(self) -> None:
        self.open: list[Connection] = []
        self.gone: list[Connection] = []

    def connect(self, uid: int, host: bytes = HOST) -> Connection:
        connection = Connection((host, uid))
        self.open.append(connection)
        return connection

    def close(self, connection: Connection) -> None:
        self.open.remove(connection)
        self.gone.append(connection)

    def live(self) -> list[Connection]:
        return list(self.open)

    def update(self) -> list[Connection]:
        gone, self.gone = self.gone, []
        return gone

    def close_all(self) -> None:
        pass


def peers(reports: Reports) -> TcpPeers:
    tracker = TcpPeers()
    tracker.add(reports)  # type: ignore[arg-type]
    return tracker


def uid(tracker: TcpPeers, address: str = "127.0.0.1", **options) -> int | None:
    return tracker.identify(address, insecure=False, **options).uid


def test_a_single_connection_is_its_clients_uid():
    reports = Reports()
    reports.connect(1001)
    assert uid(peers(reports)) == 1001


def test_two_users_connecting_at_once_are_not_guessed():
    reports = Reports()
    reports.connect(1001)
    reports.connect(0)
    assert uid(peers(reports)) is None


def test_answered_connections_do_not_make_new_ones_ambiguous():
    reports = Reports()
    tracker = peers(reports)
    reports.connect(1001)
    assert uid(tracker) == 1001
    reports.connect(0)  # the 1001 connection is still open
    assert uid(tracker) == 0
    reports.connect(1001)
    assert uid(tracker) == 1001


def test_a_closed_connection_never_vouches_for_a_new_one():
    reports = Reports()
    tracker = peers(reports)
    first = reports.connect(1001)
    assert uid(tracker) == 1001
    reports.close(first)
    reports.connect(1001)  # pending
    reports.connect(0)  # pending
    assert uid(tracker) is None
    tracker.settled()
    assert uid(tracker) is None  # still two users waiting


def test_a_connection_of_a_user_not_known_is_not_trusted():
    reports = Reports()
    reports.connect(UNKNOWN)  # its client's end was gone (time-wait) when seen
    assert uid(peers(reports)) is None


def test_peer_on_another_host_is_anonymous_unless_declared_insecure():
    reports = Reports()
    reports.connect(REMOTE, ELSEWHERE)
    tracker = peers(reports)
    assert uid(tracker, "192.0.2.7") is None
    reports.connect(REMOTE, ELSEWHERE)
    assert tracker.identify("192.0.2.7", insecure=True).anonymous_network


def test_connections_from_other_addresses_do_not_count():
    reports = Reports()
    reports.connect(REMOTE, ELSEWHERE)
    reports.connect(1001)
    assert uid(peers(reports)) == 1001


def test_a_connection_its_client_closed_keeps_its_user():
    # Circus's circusctl opens a DEALER to the event stream beside its SUB;
    # the DEALER is dropped after its handshake and closes first, while the
    # SUB is asked about.
    reports = Reports()
    tracker = peers(reports)
    dealer = reports.connect(0)
    assert uid(tracker) == 0
    reports.close(dealer)
    reports.connect(0)
    assert uid(tracker) == 0


def test_a_connection_never_seen_keeps_everyone_unidentified_until_settled():
    # Mallory's first connection greeted and was reset before circusd could
    # read its owner: the request waiting may be about it, or about her
    # second connection.
    reports = Reports()
    tracker = peers(reports)
    mystery = unseen()
    reports.open.append(mystery)
    reports.close(mystery)
    reports.connect(1001)
    assert uid(tracker) is None  # about the one gone, or the one open
    reports.connect(0)
    assert uid(tracker) is None  # root's and hers are both possible
    tracker.settled()
    assert uid(tracker) is None  # still: one of the two answers was about root's


def test_refused_connections_still_open_do_not_hide_a_later_one():
    # Two users at the same moment are both refused; they stay connected.
    # Each answer was about one of them, so a third connection is known.
    reports = Reports()
    tracker = peers(reports)
    reports.connect(1003)
    reports.connect(0)
    assert uid(tracker) is None
    assert uid(tracker) is None
    reports.connect(0)
    assert uid(tracker) == 0
    reports.connect(1003)
    assert uid(tracker) == 1003


def test_an_answer_about_one_of_two_same_user_connections_pins_neither():
    reports = Reports()
    tracker = peers(reports)
    reports.connect(0)
    reports.connect(0)
    assert uid(tracker) == 0  # about one of them, not known which
    reports.connect(1001)
    assert uid(tracker) is None  # the other root one, or the new one
    assert uid(tracker) is None  # the last: the two answers leave 0 or 1001
    reports.connect(1001)
    assert uid(tracker) == 1001  # every other connection has had its answer


def test_a_gone_connection_takes_one_answer_with_it():
    reports = Reports()
    tracker = peers(reports)
    first = reports.connect(1003)
    reports.connect(0)
    assert uid(tracker) is None
    assert uid(tracker) is None
    reports.close(first)
    tracker.settled()
    reports.connect(1003)
    assert uid(tracker) == 1003  # the answer left was about the root one


def test_two_readers_at_once_are_let_in_where_only_reading_is_asked_about():
    reports = Reports()
    tracker = peers(reports)
    reports.connect(1001)
    reports.connect(1002)
    readers = {1001, 1002}

    def reader(caller):
        return caller.uid in readers

    assert uid(tracker, enough=reader) in readers
    assert uid(tracker, enough=reader) in readers


def test_a_reader_and_a_stranger_at_once_are_still_not_guessed():
    reports = Reports()
    reports.connect(1001)
    reports.connect(1003)
    assert uid(peers(reports), enough=lambda c: c.uid == 1001) is None


def test_a_local_client_gone_before_it_was_looked_up_is_not_from_another_host():
    # With insecure_tcp, a peer on another host gets every right: a local
    # client whose end had vanished by the lookup must not pass for one.
    loopback6 = socket.inet_pton(socket.AF_INET6, "::1")
    ours = socket.inet_aton("10.0.0.5")
    assert _same_host(HOST, ours)
    assert _same_host(loopback6, ours)
    assert _same_host(ours, ours)  # a local user connecting to 10.0.0.5
    assert not _same_host(ELSEWHERE, ours)
