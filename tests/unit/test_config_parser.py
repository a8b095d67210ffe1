"""The INI reader: Circus syntax, line numbers and includes."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from circusd.config.parser import read
from circusd.errors import ConfigError


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def values(path: str, section: str) -> dict[str, str]:
    document = read(path)
    found = document.section(section)
    assert found is not None
    return {key: entry.value for key, entry in found.entries.items()}


def test_keys_keep_their_case(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[env]\nPath = 1\npath = 2\n")
    assert values(path, "env") == {"Path": "1", "path": "2"}


def test_colon_also_separates_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\nkey: value = with equals\n")
    assert values(path, "x") == {"key": "value = with equals"}


def test_first_equals_sign_splits_so_values_may_hold_more(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\nC = k=v,more\n")
    assert values(path, "x") == {"C": "k=v,more"}


def test_full_line_comments_with_hash_and_semicolon(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.ini",
        """
        # top comment
        [x]
        ; a comment
          # an indented comment
        a = 1
        """,
    )
    assert values(path, "x") == {"a": "1"}


def test_inline_semicolon_is_a_comment_only_after_whitespace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.ini",
        """
        [x]
        a = one ; comment
        b = two;three
        c = four	; after a tab
        d = ; nothing but a comment
        """,
    )
    assert values(path, "x") == {"a": "one", "b": "two;three", "c": "four", "d": ""}


def test_inline_hash_is_part_of_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\na = color #fff\n")
    assert values(path, "x") == {"a": "color #fff"}


def test_two_double_quotes_mean_the_empty_string(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", '[x]\na = ""\nb = "x"\n')
    assert values(path, "x") == {"a": "", "b": '"x"'}


def test_continuation_lines_are_joined_with_newlines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.ini",
        """
        [x]
        args = --one
            --two ; comment
            --three
        next = 1
        """,
    )
    assert values(path, "x") == {"args": "--one\n--two\n--three", "next": "1"}


def test_value_starting_on_the_next_line_has_no_leading_newline(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "a.ini", "[x]\nargs =\n    --one\n    --two\n")
    assert values(path, "x") == {"args": "--one\n--two"}


def test_percent_signs_are_literal(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\na = %(here)s 100% x1it%2BTV %%\n")
    assert values(path, "x") == {"a": "%(here)s 100% x1it%2BTV %%"}


def test_non_ascii_values_are_read_as_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\nD = héllo\n")
    assert values(path, "x") == {"D": "héllo"}


def test_repeated_key_in_one_file_keeps_the_first_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        "a.ini",
        """
        [x]
        a = first
        a = second
            continued
        b = 2
        """,
    )
    with caplog.at_level(logging.WARNING):
        assert values(path, "x") == {"a": "first", "b": "2"}
    assert "ignored repeated key" in caplog.text
    assert "line=3" in caplog.text


def test_repeated_section_is_continued(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\na = 1\n[y]\nb = 2\n[x]\na = 9\nc = 3\n")
    assert values(path, "x") == {"a": "1", "c": "3"}


def test_entries_remember_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.ini").write_text("\n# comment\n[x]\n\na = 1\nb = 2\n")
    path = str(tmp_path / "a.ini")
    section = read(path).section("x")
    assert section is not None
    assert (section.path, section.line) == (path, 3)
    assert [(e.key, e.line) for e in section.entries.values()] == [("a", 5), ("b", 6)]


def test_line_before_any_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "a = 1\n[x]\n")
    with pytest.raises(ConfigError, match="expected a \\[section\\] header") as info:
        read(path)
    assert str(info.value).startswith(f"{path}:1:")


def test_line_without_separator_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\na = 1\njust words\n")
    with pytest.raises(ConfigError, match="expected 'key = value'") as info:
        read(path)
    assert str(info.value).startswith(f"{path}:3 [x]: ")


def test_empty_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[x]\n= 1\n")
    with pytest.raises(ConfigError, match="the key is empty"):
        read(path)


def test_unclosed_section_header_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ini", "[watcher:x\ncmd = y\n")
    with pytest.raises(ConfigError, match="expected a section header") as info:
        read(path)
    assert f"{path}:1" in str(info.value)


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        read(path)
    assert path in str(info.value)


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "a.ini"
    path.write_bytes(b"[x]\na = \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        read(str(path))


# -- includes -------------------------------------------------------------------


def test_include_globs_are_relative_to_the_main_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write(tmp_path, "etc/main.ini", "[circus]\ninclude = conf.d/*.ini\n")
    write(tmp_path, "etc/conf.d/b.ini", "[watcher:b]\ncmd = b\n")
    write(tmp_path, "etc/conf.d/a.ini", "[watcher:a]\ncmd = a\n")
    write(tmp_path, "etc/conf.d/skip.txt", "[watcher:c]\ncmd = c\n")
    monkeypatch.chdir(tmp_path)
    document = read(main)
    assert list(document.sections) == ["circus", "watcher:a", "watcher:b"]
    assert document.files[1:] == [
        str(tmp_path / "etc/conf.d/a.ini"),
        str(tmp_path / "etc/conf.d/b.ini"),
    ]


def test_include_dir_reads_every_ini_file_of_each_directory(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude_dir = one two\n")
    write(tmp_path, "one/x.ini", "[watcher:x]\ncmd = x\n")
    write(tmp_path, "two/y.ini", "[watcher:y]\ncmd = y\n")
    write(tmp_path, "two/z.conf", "[watcher:z]\ncmd = z\n")
    assert set(read(main).sections) == {"circus", "watcher:x", "watcher:y"}


def test_included_file_cannot_override_but_can_add(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main = write(
        tmp_path,
        "main.ini",
        """
        [circus]
        include = extra.ini
        endpoint = tcp://127.0.0.1:7000
        [watcher:w]
        cmd = original
        """,
    )
    write(
        tmp_path,
        "extra.ini",
        """
        [circus]
        endpoint = tcp://127.0.0.1:9999
        pidfile = /run/x.pid
        [watcher:w]
        cmd = replaced
        numprocesses = 3
        [watcher:other]
        cmd = other
        """,
    )
    with caplog.at_level(logging.WARNING):
        document = read(main)
    assert values(main, "circus")["endpoint"] == "tcp://127.0.0.1:7000"
    assert values(main, "circus")["pidfile"] == "/run/x.pid"
    assert values(main, "watcher:w") == {"cmd": "original", "numprocesses": "3"}
    assert "watcher:other" in document.sections
    assert "included file cannot override key" in caplog.text


def test_include_matching_nothing_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = missing/*.ini\n")
    with caplog.at_level(logging.WARNING):
        read(main)
    assert "include matched no file" in caplog.text
    assert "missing/*.ini" in caplog.text


def test_includes_are_not_recursive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = one.ini\n")
    write(tmp_path, "one.ini", "[circus]\ninclude_dir = deeper\n[watcher:one]\ncmd=1\n")
    write(tmp_path, "deeper/two.ini", "[watcher:two]\ncmd = 2\n")
    with caplog.at_level(logging.WARNING):
        document = read(main)
    assert "watcher:two" not in document.sections
    assert "watcher:one" in document.sections
    assert "includes are not recursive" in caplog.text


def test_a_file_included_twice_is_read_once(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = a.ini *.ini\n")
    write(tmp_path, "a.ini", "[watcher:a]\ncmd = a\n")
    assert read(main).files == [main, str(tmp_path / "a.ini")]


def test_include_patterns_can_be_expanded_by_the_caller(tmp_path: Path) -> None:
    main = write(tmp_path, "main.ini", "[circus]\ninclude = $(circus.env.D)/*.ini\n")
    write(tmp_path, "sub/a.ini", "[watcher:a]\ncmd = a\n")
    document = read(main, lambda entry: entry.value.replace("$(circus.env.D)", "sub"))
    assert "watcher:a" in document.sections


def test_include_dir_that_is_empty_is_quiet_and_a_missing_one_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "conf.d").mkdir()
    main = write(tmp_path, "main.ini", "[circus]\ninclude_dir = conf.d absent.d\n")
    with caplog.at_level(logging.WARNING):
        read(main)
    assert "absent.d/*.ini" in caplog.text
    assert "conf.d/*.ini" not in caplog.text
