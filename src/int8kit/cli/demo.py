"""``int8kit demo``: quantize the bundled MNIST model and print FP32 vs INT8."""

from __future__ import annotations

import argparse
from typing import Any

from int8kit.cli.common import add_progress


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="quantize the bundled MNIST model and print FP32 vs INT8")
    p.add_argument("-o", "--output-dir", default="int8kit-demo", help="folder for the demo's outputs")
    add_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit.demo import run_demo

    print(run_demo(output_dir=args.output_dir, progress=not args.no_progress))
    return 0
