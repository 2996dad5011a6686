"""``int8kit calibrate``: one streaming pass, statistics saved (the manual's -dump_dist)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.common import add_model_data, names
from int8kit.cli.options import given_options
from int8kit.config import CalibOptions


def add_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="one streaming pass: save activation statistics")
    add_model_data(p, data_required=True)
    p.add_argument("-o", "--output", help="statistics file (default: <stem>_stats.npz beside the model)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api

    out = args.output or str(Path(args.model).with_name(Path(args.model).stem + "_stats.npz"))
    result = api.calibrate(args.model, args.data, output=out, no_fuse=names(args.no_fuse), progress=not args.no_progress,
                           **given_options(args, CalibOptions), **cli_data.preprocess_kwargs(args),
                           **cli_convert.source_kwargs(args))
    print(f"calibrated {len(result.stats.tensors)} tensors on {result.stats.samples} samples in {result.seconds:.1f} s; wrote {result.path}")
    return 0
