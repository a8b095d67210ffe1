"""Lines from processes that share one output file never mix."""

import asyncio

from circusd.streams import FileStream


def test_partial_lines_of_two_processes_do_not_mix(tmp_path):
    out = tmp_path / "out.log"

    async def scenario() -> None:
        stream = FileStream(str(out))
        stream.write(b"begin-1 ", 1)
        stream.write(b"begin-2 ", 2)
        stream.write(b"end-1\nnext-1", 1)
        stream.write(b"end-2\n", 2)
        stream.end(1)
        stream.close()

    asyncio.run(scenario())
    assert out.read_bytes() == b"begin-1 end-1\nbegin-2 end-2\nnext-1"


def test_time_format_prefixes_every_line_with_the_pid(tmp_path):
    out = tmp_path / "out.log"

    async def scenario() -> None:
        stream = FileStream(str(out), time_format="T")
        stream.write(b"a\nb", 7)
        stream.write(b"c\n", 7)
        stream.close()

    asyncio.run(scenario())
    assert out.read_bytes() == b"T [7] | a\nT [7] | bc\n"


def test_a_line_without_newline_is_written_after_a_second(tmp_path):
    out = tmp_path / "out.log"

    async def scenario() -> None:
        stream = FileStream(str(out))
        stream.write(b"prompt> ", 3)
        await asyncio.sleep(1.2)
        assert out.read_bytes() == b"prompt> "
        stream.close()

    asyncio.run(scenario())
