"""``int8kit`` command line: a thin shell over ``int8kit.api``, one module per verb.

Each verb module has ``add_parser(sub)``, which registers its options and sets ``run``, the
function that calls the API and prints the result.
"""

from __future__ import annotations

import argparse
import logging
import sys

from int8kit import __version__
from int8kit.errors import Int8kitError

log = logging.getLogger("int8kit")


def build_parser() -> argparse.ArgumentParser:
    """The whole parser: every verb and option (docs/cli.md is generated from it)."""
    from int8kit.cli import auto, calibrate, convert, data, demo, eval, inspect, lmdb, optimize, quantize

    parser = argparse.ArgumentParser(prog="int8kit", description="Post-training INT8 quantization of ONNX models.")
    parser.add_argument("--version", action="version", version=f"int8kit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb in (demo, optimize, calibrate, quantize, auto, eval, inspect, lmdb, data, convert):
        verb.add_parser(sub)
    from int8kit.cli import analyze

    analyze.add_parser(sub)
    for name, verb in (("lmdb", lmdb), ("data", data), ("convert", convert)):
        sub.choices[name].set_defaults(run=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and return their exit code (2).

    A Ctrl-C propagates as KeyboardInterrupt: the ``int8kit`` command (``int8kit.__main__``) turns
    it into one line, from the first moment it can catch it, which is before this module imports."""
    try:
        return _run(argv)
    except Int8kitError as exc:
        print(f"int8kit: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # bare `int8kit`: what it can do, not an error about a missing argument
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="int8kit: %(message)s")
    return args.run(args)

if __name__ == "__main__":
    sys.exit(main())
