"""docs/cli.md is the parser's own description of every verb and option, kept current."""

from __future__ import annotations

import argparse
from pathlib import Path

from int8kit.cli import build_parser
from int8kit.cli.reference import markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield action


def test_docs_cli_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), "regenerate: python -m int8kit.cli.reference > docs/cli.md"


def test_every_option_is_explained() -> None:
    unexplained = [a.option_strings or a.dest for a in _actions(build_parser()) if not a.help]
    assert unexplained == []
    text = DOC.read_text(encoding="utf-8")
    for action in _actions(build_parser()):
        for option in action.option_strings:
            assert f"`{option}`" in text
