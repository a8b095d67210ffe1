"""The text views' rule: incremental UTF-8 per process, U+FFFD for what is
not UTF-8 and for NUL, nothing else changed (case B18)."""

from __future__ import annotations

import asyncio

from circusd.streams.base import TextLines

# Case B18's bytes: é starts at byte 1025, where Circus cut its reads.
B18 = (
    b"\x88\xff\n"
    + b"a" * 1022
    + "é".encode()
    + b"\n"
    + "日本語\n".encode()
    + b"\x00tail\n"
)


def lines_of(chunks: list[tuple[bytes, int]], end: tuple[int, ...] = ()) -> list:
    """The lines emitted, inside an event loop as in the daemon."""

    async def scenario() -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        text = TextLines(lambda line, pid: got.append((line, pid)))
        for data, pid in chunks:
            text.feed(data, pid)
        for pid in end:
            text.end(pid)
        return got

    return asyncio.run(scenario())


def test_a_character_split_between_reads_is_decoded_whole():
    chunks = [(B18[:1025], 1), (B18[1025:], 1)]
    assert lines_of(chunks) == [
        ("\ufffd\ufffd", 1),
        ("a" * 1022 + "é", 1),
        ("日本語", 1),
        ("\ufffdtail", 1),
    ]


def test_every_split_point_gives_the_same_text():
    whole = lines_of([(B18, 1)])
    for cut in range(1, len(B18)):
        assert lines_of([(B18[:cut], 1), (B18[cut:], 1)]) == whole, cut


def test_each_maximal_invalid_sequence_becomes_one_replacement_character():
    # A truncated three-byte sequence is one invalid sequence; a lone
    # continuation byte and 0xff are one each.
    assert lines_of([(b"x\xe6\x97y\x80\xffz\n", 1)]) == [("x\ufffdy\ufffd\ufffdz", 1)]


def test_processes_are_decoded_apart():
    snowman = "☃".encode()
    chunks = [(snowman[:1], 1), (snowman[:2], 2), (snowman[1:] + b"\n", 1)]
    chunks.append((snowman[2:] + b"\n", 2))
    assert lines_of(chunks) == [("☃", 1), ("☃", 2)]


def test_an_unfinished_character_at_the_end_of_a_pipe_is_replaced():
    assert lines_of([(b"abc\xe6\x97", 4)], end=(4,)) == [("abc\ufffd", 4)]


def test_a_prompt_without_newline_comes_out_after_a_second_and_keeps_its_char():
    async def scenario() -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        text = TextLines(lambda line, pid: got.append((line, pid)))
        text.feed("prompt é".encode()[:-1], 3)
        await asyncio.sleep(1.2)
        text.feed("é".encode()[1:] + b"\n", 3)
        return got

    assert asyncio.run(scenario()) == [("prompt ", 3), ("é", 3)]
