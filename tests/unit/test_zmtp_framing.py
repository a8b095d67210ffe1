"""The ZMTP 3.0 framing of circusd.client.ssh.zmtp, against byte strings
written out by hand from the spec (23/ZMTP)."""

from __future__ import annotations

import pytest

from circusd.client.ssh.zmtp import (
    GREETING,
    ProtocolError,
    Reader,
    encode_frame,
    encode_ready,
    parse_metadata,
)

# A server's NULL greeting: signature, 3.0, "NULL" padded to 20, as-server, filler.
SERVER_GREETING = (
    b"\xff\0\0\0\0\0\0\0\0\x7f"
    + b"\x03\x00"
    + b"NULL"
    + bytes(16)
    + b"\x01"
    + bytes(31)
)


def test_the_greeting_is_64_octets_of_a_null_zmtp_3_client() -> None:
    assert len(GREETING) == 64
    assert GREETING[:10] == b"\xff\0\0\0\0\0\0\0\0\x7f"
    assert GREETING[10:12] == b"\x03\x00"
    assert GREETING[12:32] == b"NULL" + bytes(16)
    assert GREETING[32:] == bytes(32)  # as-server 0, then the filler


def test_a_body_of_up_to_255_octets_has_a_short_frame_and_longer_a_long_one() -> None:
    assert encode_frame(b"") == b"\x00\x00"
    assert encode_frame(b"x" * 255) == b"\x00\xff" + b"x" * 255
    assert encode_frame(b"x" * 256) == b"\x02" + (256).to_bytes(8, "big") + b"x" * 256


def test_ready_carries_its_properties_as_metadata() -> None:
    frame = encode_ready({b"Socket-Type": b"DEALER", b"Identity": b"abc"})

    body = b"\x05READY\x0bSocket-Type\0\0\0\x06DEALER\x08Identity\0\0\0\x03abc"
    assert frame == b"\x04" + bytes([len(body)]) + body
    assert parse_metadata(body[6:]) == {b"socket-type": b"DEALER", b"identity": b"abc"}


def test_truncated_metadata_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="malformed READY metadata"):
        parse_metadata(b"\x0bSocket-Type\0\0\0\x06ROU")


def test_frames_fed_one_octet_at_a_time_come_out_whole_and_in_order() -> None:
    ready = b"\x05READY\x0bSocket-Type\0\0\0\x06ROUTER"
    long_body = bytes(range(256)) * 40
    wire = (
        SERVER_GREETING
        + b"\x04" + bytes([len(ready)]) + ready  # a command, short
        + b"\x01\x03abc"  # more to come, short
        + b"\x02" + len(long_body).to_bytes(8, "big") + long_body  # last, long
    )  # fmt: skip
    reader = Reader()
    frames = []
    for octet in wire:
        reader.feed(bytes([octet]))
        frames += reader.frames()

    assert reader.greeted and not reader.pending
    assert frames == [
        (0x04, ready),
        (0x01, b"abc"),
        (0x02, long_body),
    ]


def test_a_peer_that_is_not_zeromq_is_refused_at_its_first_octet() -> None:
    with pytest.raises(ProtocolError, match="does not speak ZMTP"):
        Reader().feed(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_a_zmtp_2_peer_is_refused_at_its_version() -> None:
    with pytest.raises(ProtocolError, match=r"ZMTP 1\.x, not 3"):
        Reader().feed(SERVER_GREETING[:10] + b"\x01")


def test_a_curve_endpoint_is_refused_by_name() -> None:
    greeting = SERVER_GREETING[:12] + b"CURVE" + bytes(15) + SERVER_GREETING[32:]

    with pytest.raises(ProtocolError, match="asks for the CURVE security mechanism"):
        Reader().feed(greeting)


def test_reserved_flag_bits_are_a_protocol_error() -> None:
    reader = Reader()
    reader.feed(SERVER_GREETING + b"\x80\x00")

    with pytest.raises(ProtocolError, match="invalid frame flags 0x80"):
        reader.frames()
