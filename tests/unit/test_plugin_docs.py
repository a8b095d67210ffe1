"""docs/plugins.md is generated from the plugins' option tables."""

from __future__ import annotations

from pathlib import Path

from circusd.config.plugin_options import BUILTINS, PROCESS_OPTIONS
from circusd.plugins.docgen import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_committed_plugins_doc_matches_the_generator() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/plugins.md is stale: run "
        "`python -m circusd.plugins.docgen > docs/plugins.md`"
    )


def test_every_plugin_and_option_is_documented() -> None:
    text = render()
    for builtin in BUILTINS.values():
        assert f"(`{builtin.circus_name}`)" in text
        for name in builtin.options:
            assert f"| `{name}` |" in text
    for name in PROCESS_OPTIONS:
        assert f"| `{name}` |" in text
