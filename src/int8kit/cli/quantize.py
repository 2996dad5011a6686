"""``int8kit quantize``: calibrate (or load statistics), plan and write the QDQ INT8 model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.common import add_model_data, names
from int8kit.cli.options import add_config_options, add_percentile, apply_percentile, given_options
from int8kit.config import CalibOptions, QuantConfig, RunConfig, TuneOptions


def add_parser(sub: Any) -> None:
    p = sub.add_parser("quantize", help="calibrate, choose thresholds and write a QDQ INT8 model")
    add_model_data(p, data_required=False)
    p.add_argument("--stats", help="statistics from 'int8kit calibrate' (no inference pass)")
    p.add_argument("-o", "--output-dir", default="int8kit-out",
                   help="folder for the five outputs (created if missing); a name ending in .onnx writes the INT8 model alone")
    p.add_argument("--config", metavar="JSON",
                   help="replay a run: a --save-config file (or a <stem>_quant.json); options given here change it")
    p.add_argument("--save-config", metavar="JSON", help="write every option of this run, resolved and versioned")
    add_config_options(p, QuantConfig)
    add_percentile(p)
    add_config_options(p, TuneOptions)
    p.add_argument("--dump-stats", help="also save the statistics of this pass (the manual's -dump_dist)")
    p.add_argument("--no-latency-check", action="store_true",
                   help="skip timing INT8 against FP32 at the end (about 2 s; a warning names what costs time when "
                        "INT8 is not faster)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api

    options = {**given_options(args, QuantConfig), **given_options(args, TuneOptions)}
    base_method = RunConfig.load(args.config).quant.th_method if args.config else None
    options = apply_percentile(options, args.percentile, base_method)
    result = api.quantize(
        args.model, args.data, stats=args.stats, config=args.config, **_destination(args.output_dir),
        save_config=args.save_config, dump_stats=args.dump_stats, no_fuse=names(args.no_fuse),
        progress=not args.no_progress, check_latency=not args.no_latency_check, **options, **given_options(args, CalibOptions),
        **cli_data.preprocess_kwargs(args), **cli_convert.source_kwargs(args),
    )
    written = ("int8_model", "fp32_optimized_model", "quant_json", "calibration_table", "tensorrt_cache", "int4_deploy_model")
    summary = {
        **{key: str(getattr(result, key)) for key in written if getattr(result, key) is not None},
        **({"config": str(args.save_config)} if args.save_config else {}),
        "quantized_tensors": sum(1 for t in result.plan.tensors.values() if t.kind == "activation"),
        "float_nodes": len(result.plan.float_nodes),
        **({"bias_tuned_convs": result.bias_tuned} if result.run_config.tune.bias_tuning else {}),
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if result.speed is not None:
        summary["latency"] = result.speed.summary()
    if result.quant_json is None:
        summary["note"] = "the INT8 model alone; -o FOLDER also writes the records (quant.json, calibration table, ...)"
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        print(f"{key:22s} {value}")
    from int8kit.analysis.ort_fusion import float_as_run

    print(_float_layers(float_as_run(result.model, result.plan, result.config.inputs_only)))
    if result.int8_model is not None:
        print(f"next: int8kit eval {args.model} {result.int8_model} --data TEST_DATA   (add --per-layer or --report "
              "report.html to see where the error comes from)")
    return 0


def _float_layers(float_nodes: dict[str, str], shown: int = 8) -> str:
    """The layers kept float, with why, so a user knows what to change."""
    if not float_nodes:
        return "every quantizable layer runs in INT8"
    lines = [f"kept float ({len(float_nodes)}):"]
    lines += [f"  {name}: {why}" for name, why in list(float_nodes.items())[:shown]]
    if len(float_nodes) > shown:
        lines.append(f"  ... and {len(float_nodes) - shown} more (all in the quant.json record, 'float_nodes')")
    return "\n".join(lines)


def _destination(out: str) -> dict[str, str]:
    """``-o x.onnx``: the INT8 model file alone; any other ``-o``: the folder for the full set."""
    return {"output": out} if out.lower().endswith(".onnx") else {"output_dir": out}
