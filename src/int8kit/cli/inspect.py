"""``int8kit inspect``: the model's layers, names for the per-layer options."""

from __future__ import annotations

import argparse
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli.common import add_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="list the model's layers (names for the per-layer options)")
    add_model(p, "ONNX, or Caffe/Darknet/PyTorch/... files (converted in memory first)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit.describe import describe

    print(describe(args.model, **cli_convert.source_kwargs(args)))
    return 0
