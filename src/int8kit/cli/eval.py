"""``int8kit eval``: FP32 vs INT8 on the same data."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from int8kit.cli import convert as cli_convert
from int8kit.cli import data as cli_data
from int8kit.cli.common import add_model_pair, add_progress
from int8kit.evaluate.op_profile import PROFILE_RUNS
from int8kit.runtime.openvino import RUNTIMES


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="FP32 vs INT8: accuracy, agreement, cosine, latency")
    add_model_pair(p)
    p.add_argument("--labels", help=".npy of integer class labels; for --metric also text indices (N, L), a .json list, "
                                    "or a text file of one label per line (data.label boxes cls,x1,y1,x2,y2;...)")
    p.add_argument("--metric", metavar="SPEC",
                   help="also score the task, with 95 %% intervals and the paired drop: top1, top5, agreement (FP32 top-1 "
                        "as labels), cosine, map (VOC mAP@0.5 from detection labels), or module:Class (your TaskMetric; "
                        "docs/metrics.md)")
    p.add_argument("--postprocess", metavar="MODULE:FN",
                   help="for --metric map: function(outputs) -> one (K, 6) array per image (cls, conf, x1, y1, x2, y2); "
                        "SSD DetectionOutput rows need none")
    p.add_argument("--output", help="model output to compare (default: the first)")
    p.add_argument("--batch", type=int, dest="batch_size",
                   help="samples per inference batch (default: up to 32 and at most 20 MB of input)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads for the accuracy pass (latency uses one)")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="where both models run: onnxruntime, or openvino in its default precision (pip install openvino); "
                        "--per-layer always runs in onnxruntime")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    p.add_argument("--profile", action="store_true",
                   help="also print where the runtime spends each model's time, per op type of the graph it runs "
                        f"(its profiler, batch 1, one thread, {PROFILE_RUNS} runs each in turns)")
    add_progress(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--per-layer", action="store_true", help="also compare every tensor; print the 20 worst")
    p.add_argument("--report", metavar="HTML", help="write a self-contained HTML report (plots need matplotlib)")
    p.add_argument("--quant-json", help="the quantize record for the report (default: <stem>_quant.json beside <stem>_int8.onnx)")
    p.add_argument("--stats", help="calibration statistics for the report's histograms (calibrate / --dump-stats)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from int8kit import api

    result = api.evaluate(
        args.fp32_model, args.int8_model, args.data, labels=args.labels, output=args.output, batch_size=args.batch_size,
        threads=args.threads, runtime=args.runtime, latency=not args.no_latency, progress=not args.no_progress, per_layer=args.per_layer,
        report=args.report, quant_json=args.quant_json, stats=args.stats, **cli_data.preprocess_kwargs(args),
        **cli_convert.source_kwargs(args), metric=args.metric, postprocess=args.postprocess, profile=args.profile,
    )
    payload = result.to_dict()
    if not args.per_layer:
        payload.pop("layers", None)
    print(json.dumps(payload, indent=2) if args.json else result.to_table())
    if result.task is not None and not args.json:
        print(task_verdict(result.task))
    if result.op_profile is not None and not args.json:
        from int8kit.evaluate.op_profile import op_table

        print(f"\nwhere {result.runtime} spends the time (its profiler; batch 1, one thread; median of {PROFILE_RUNS} runs)")
        print(op_table(result.op_profile))
    if args.per_layer and not args.json:
        from int8kit.analysis.layerwise import layer_table

        print(f"\nworst {min(20, len(result.layers))} of {len(result.layers)} tensors (relative error, up to 32 samples)")
        print(layer_table(result.layers, worst=20))
    if args.report:
        print(f"wrote {args.report}", file=sys.stderr if args.json else sys.stdout)
    return 0


def task_verdict(task: Any) -> str:
    """One sentence: the task scores and whether the drop stands out from sampling noise."""
    d = task.drop
    if d.low is None:
        noise = "no interval (the metric gives no per-sample values)"
    elif d.significant:
        noise = "its 95 % interval excludes 0: a real difference, not sampling noise"
    else:
        noise = f"its 95 % interval includes 0: within sampling noise on {d.n} samples"
    return f"{task.metric}: FP32 {task.fp32}, INT8 {task.int8}; drop {d.value:+.4f} ({noise})"
