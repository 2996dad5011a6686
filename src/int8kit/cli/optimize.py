"""``int8kit optimize``: the manual's graph_transform."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli.common import add_model, names


def add_parser(sub: Any) -> None:
    p = sub.add_parser("optimize", help="fold BatchNorm/Scale into convs, drop Identity/Dropout, fold constants")
    add_model(p)
    p.add_argument("-o", "--output", help="output path (default: <stem>_optimized.onnx beside the input)")
    p.add_argument("--no-fuse", default="", help="comma-separated layer names not to fold")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api

    out = args.output or (str(Path(args.model).with_name(Path(args.model).stem + "_optimized.onnx")) if Path(args.model).name else None)
    result = api.optimize(args.model, output=out, no_fuse=names(args.no_fuse), **cli_convert.source_kwargs(args))
    for line in result.log:
        print(line)
    print(f"wrote {result.path}")
    return 0
