"""docs/configuration.md is generated from the option tables."""

from __future__ import annotations

from pathlib import Path

from circusd.config.docgen import render
from circusd.config.options import CIRCUS_OPTIONS, SOCKET_OPTIONS, WATCHER_OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_configuration_doc_matches_the_generator() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run "
        "`python -m circusd.config.docgen > docs/configuration.md`"
    )


def test_every_option_is_documented() -> None:
    text = render()
    for table in (CIRCUS_OPTIONS, WATCHER_OPTIONS, SOCKET_OPTIONS):
        for name in table:
            assert f"| `{name}` |" in text


def test_socket_umask_default_is_shown_in_octal() -> None:
    assert "| `umask` | `077` |" in render()
