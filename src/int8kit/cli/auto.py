"""``int8kit auto``: search for the fastest INT8 model that meets an accuracy budget (auto_calib)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.common import add_model, add_progress, names
from int8kit.cli.options import add_config_options, given_options
from int8kit.config import CalibOptions, QuantConfig
from int8kit.config.search import SearchOptions


def add_parser(sub: Any) -> None:
    p = sub.add_parser("auto", help="search quantization strategies for the fastest INT8 model within an accuracy budget")
    add_model(p)
    p.add_argument("--calib-data", "--data", dest="data", required=True, help=cli_data.DATA_HELP)
    p.add_argument("--test-data", required=True,
                   help="test samples (same forms as --calib-data): the first half scores the candidates, "
                        "the second half is held out to report the chosen one")
    p.add_argument("--labels", help="one label per test sample (.npy or one integer per line), for top1/top5")
    p.add_argument("--postprocess", metavar="MODULE:FUNCTION",
                   help="turns raw outputs into what a module:Class metric reads")
    cli_data.add_preprocess_args(p)
    p.add_argument("-o", "--output-dir", default="int8kit-out",
                   help="folder for the chosen model, its records and configuration, the search log and the report")
    p.add_argument("--config", metavar="JSON", help="the base configuration the candidates change (a --save-config file)")
    add_config_options(p, SearchOptions)
    add_config_options(p, QuantConfig)
    add_config_options(p, CalibOptions)
    p.add_argument("--no-fuse", default="", help="comma-separated layer names the optimizer must not fold")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api
    from int8kit.auto.report import search_dict, summary_lines

    options = {**given_options(args, SearchOptions), **given_options(args, QuantConfig), **given_options(args, CalibOptions)}
    if "th_params" in options and not options["th_params"]:
        options.pop("th_params")
    result = api.auto(args.model, args.data, args.test_data, labels=args.labels, output_dir=args.output_dir,
                      config=args.config, postprocess=args.postprocess, no_fuse=names(args.no_fuse),
                      progress=not args.no_progress, **options, **cli_data.preprocess_kwargs(args),
                      **cli_convert.source_kwargs(args))
    if args.json:
        out = search_dict(result)
        out["files"] = {k: str(v) for k, v in result.files.items()}
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print()
        print(result.log.table(result.chosen.key))
        if result.files:
            print(f"\nwritten: {result.files['_int8.onnx']} (+ records, {result.files['_config.json'].name} to replay with "
                  f"'int8kit quantize --config', {result.files['_search.txt'].name}, {result.files['_report.html'].name})")
    return 0 if result.meets else 1
