"""The man pages that circusd.cli.mangen writes (the package build runs it):
groff finds nothing wrong in them, and they say what the code does."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from circusd import __version__
from circusd.cli import mangen

MAN = shutil.which("man")


@pytest.mark.skipif(MAN is None, reason="man-db is not installed")
@pytest.mark.parametrize("name", sorted(mangen.PAGES))
def test_man_page_renders_without_groff_warnings(tmp_path, name):
    mangen.main([str(tmp_path)])
    result = subprocess.run(
        [MAN or "man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
         str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"},
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_man_page_date_follows_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first_line = mangen.circusd_page().splitlines()[0]
    assert first_line == (
        f'.TH CIRCUSD 8 "2023-11-14" "circusd {__version__}" '
        '"Circus-compatible process supervisor"'
    )


def test_text_escapes_what_roff_would_read_as_requests():
    assert mangen.text(".hidden\n'quote\n--opt a\\b") == (
        "\\&.hidden\n\\&'quote\n\\-\\-opt a\\eb"
    )
