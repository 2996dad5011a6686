"""docs/cli.md, written from the argument parser itself so the reference cannot drift from it.

    python -m int8kit.cli.reference > docs/cli.md
"""

from __future__ import annotations

import argparse

from int8kit.cli import build_parser

_HEADER = """# Command-line reference

Every verb and option of `int8kit`, generated from the parser (`python -m int8kit.cli.reference >
docs/cli.md`; a test fails when this file is out of date). The README and the other docs explain
what the options do together; `int8kit <verb> --help` prints the same text.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()  # the formatter --help uses: expands %(default)s
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        default = getattr(action, "shown_default", action.default)  # config options keep no argparse default
        hidden = default is None or default is False or default in ("", [], argparse.SUPPRESS) or action.nargs == 0
        shown = "" if hidden else f"`{default}`"
        if action.required and action.option_strings:
            shown = "required"
        rows.append(f"| {name} | {shown} | {_cell(formatter._expand_help(action) if action.help else '')} |")
    return rows


def _sections(parser: argparse.ArgumentParser, prefix: list[str], helps: dict[str, str]) -> list[str]:
    out: list[str] = []
    rows = _rows(parser)
    title = " ".join(["int8kit", *prefix])
    if rows:
        out += [f"## `{title}`", ""]
        if prefix and helps.get(" ".join(prefix)):
            out += [helps[" ".join(prefix)][0].upper() + helps[" ".join(prefix)][1:] + ".", ""]
        out += ["| option | default | what it does |", "| --- | --- | --- |", *rows, ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                helps[" ".join([*prefix, choice.dest])] = choice.help or ""
            for name, sub in action.choices.items():
                out += _sections(sub, [*prefix, name], helps)
    return out


def markdown() -> str:
    """The whole reference as Markdown."""
    return "\n".join([_HEADER, *_sections(build_parser(), [], {})]).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
