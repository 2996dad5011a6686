"""``int8kit analyze``: where an INT8 model's error comes from, layer by layer."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.common import add_model_pair, add_progress


def add_parser(sub: Any) -> None:
    p = sub.add_parser("analyze", help="where the INT8 error comes from: accumulated and isolated error per layer, HTML report")
    add_model_pair(p)
    p.add_argument("--labels", help=".npy of integer class labels")
    p.add_argument("--quant-json", help="the quantize record (default: <stem>_quant.json beside <stem>_int8.onnx)")
    p.add_argument("--stats", help="calibration statistics for the report's histograms (calibrate / --dump-stats)")
    p.add_argument("--report", metavar="HTML", help="write a self-contained HTML report (plots need matplotlib)")
    p.add_argument("--samples", type=int, default=32, help="samples the per-layer errors use (default 32)")
    p.add_argument("--worst", type=int, default=10, help="layers in the terminal's worst-layers table (default 10)")
    p.add_argument("--output", help="model output to score and carry errors to (default: the first)")
    p.add_argument("--batch", type=int, dest="batch_size", help="samples per inference batch")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads for the evaluation pass")
    p.add_argument("--latency", action="store_true", help="also time both models at batch 1")
    add_progress(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api

    result = api.analyze(
        args.fp32_model, args.int8_model, args.data, labels=args.labels, quant_json=args.quant_json, stats=args.stats,
        report=args.report, samples=args.samples, output=args.output, batch_size=args.batch_size, threads=args.threads,
        latency=args.latency, progress=not args.no_progress, **cli_data.preprocess_kwargs(args),
        **cli_convert.source_kwargs(args),
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_table(worst=args.worst))
    if args.report:
        print(f"wrote {args.report}", file=sys.stderr if args.json else sys.stdout)
    return 0
