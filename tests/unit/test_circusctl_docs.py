"""docs/circusctl.md is generated from circusctl's own help text."""

from __future__ import annotations

from pathlib import Path

from circusd.cli.docgen import generate

DOC = Path(__file__).resolve().parents[2] / "docs" / "circusctl.md"


def test_committed_circusctl_doc_matches_the_generator() -> None:
    assert DOC.read_text() == generate(), (
        "docs/circusctl.md is stale: run "
        "`python -m circusd.cli.docgen > docs/circusctl.md`"
    )


def test_circusctl_doc_covers_every_command() -> None:
    text = generate()
    for command in (
        "add",
        "rm",
        "start",
        "stop",
        "restart",
        "reload",
        "reloadconfig",
        "incr",
        "decr",
        "set",
        "get",
        "options",
        "signal",
        "kill",
        "stats",
        "status",
        "list",
        "numprocesses",
        "numwatchers",
        "listsockets",
        "dstats",
        "globaloptions",
        "quit",
        "listen",
        "top",
    ):
        assert f"\n### {command}\n" in text
