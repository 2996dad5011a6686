"""``int8kit`` command line: a thin shell over ``int8kit.api`` (one verb, one function)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from int8kit import __version__, cli_convert, cli_data
from int8kit.errors import ConfigError, Int8kitError

log = logging.getLogger("int8kit")


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def _number_list(text: str) -> Any:
    """'0.5,2' or '(0.5, 2)' as [0.5, 2.0]; any other text as it is."""
    parts = text.strip().strip("()[]").split(",")
    try:
        return [float(p) for p in parts] if len(parts) > 1 else text
    except ValueError:
        return text


def _th_params(pairs: list[str], percentile: float | None, method: str) -> dict[str, Any]:
    from int8kit.thresholds import resolve

    if percentile is not None and resolve(method)[0] != "percentile":
        raise ConfigError(f"--percentile sets the percentile of --th-method percentile, but the method is '{method}'; "
                          "drop --percentile or choose --th-method percentile.")
    params: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--th-param expects KEY=VALUE (e.g. search_step=0.01), got '{pair}'.")
        key, value = pair.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = _number_list(value)
    if percentile is not None:
        if "percentile" in params and params["percentile"] != percentile:
            raise ConfigError(f"--percentile {percentile} and --th-param percentile={params['percentile']} disagree; give one of them.")
        params["percentile"] = percentile
    return params


def _add_model_data(p: argparse.ArgumentParser, data_required: bool) -> None:
    p.add_argument("model", help="FP32 model: ONNX, or Caffe/Darknet/PyTorch/... files (converted first)")
    cli_convert.add_source_args(p)
    p.add_argument("--data", required=data_required, help=cli_data.DATA_HELP)
    cli_data.add_preprocess_args(p)
    p.add_argument("--iterations", type=int, help="number of calibration samples to use (default: all)")
    p.add_argument("--batch", type=int, dest="batch_size", help="batch size for models with a dynamic batch axis")
    p.add_argument("--th-binnum", type=int, dest="bins",
                   help="histogram bins per side, power of two 512-4096 (default 2048; with --stats: the statistics' own, or fewer)")
    p.add_argument("--no-fuse", default="", help="comma-separated layer names the optimizer must not fold")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="int8kit", description="Post-training INT8 quantization of ONNX models.")
    parser.add_argument("--version", action="version", version=f"int8kit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("demo", help="quantize the bundled MNIST model and print FP32 vs INT8")
    p.add_argument("-o", "--output-dir", default="int8kit-demo", help="folder for the demo's outputs")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("optimize", help="fold BatchNorm/Scale into convs, drop Identity/Dropout, fold constants")
    p.add_argument("model", help="FP32 model: ONNX, or Caffe/Darknet/PyTorch/... files (converted first)")
    cli_convert.add_source_args(p)
    p.add_argument("-o", "--output", help="output path (default: <stem>_optimized.onnx beside the input)")
    p.add_argument("--no-fuse", default="", help="comma-separated layer names not to fold")

    p = sub.add_parser("calibrate", help="one streaming pass: save activation statistics")
    _add_model_data(p, data_required=True)
    p.add_argument("-o", "--output", help="statistics file (default: <stem>_stats.npz beside the model)")

    p = sub.add_parser("quantize", help="calibrate, choose thresholds and write a QDQ INT8 model")
    _add_model_data(p, data_required=False)
    p.add_argument("--stats", help="statistics from 'int8kit calibrate' (no inference pass)")
    p.add_argument("-o", "--output-dir", default="int8kit-out", help="folder for the five outputs (created if missing)")
    p.add_argument("--th-method", default="kl", help="max, percentile, kl (default), symkl, jsd, mse, admm, aciq_laplace, aciq_gauss, ifmr")
    p.add_argument("--percentile", type=float, help="percentile for --th-method percentile (default 99.99)")
    p.add_argument("--th-param", action="append", default=[], metavar="KEY=VALUE", help="extra method parameter, repeatable")
    p.add_argument("--no-method-rules", action="store_true",
                   help="apply --th-method to every activation (default: max for model inputs and bounded outputs, "
                        "mse where kl/symkl/jsd would clip signed or one-sided tensors; overrides still apply)")
    granularity = p.add_mutually_exclusive_group()
    granularity.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                             help="one weight scale per output channel (the default)")
    granularity.add_argument("--per-tensor", dest="per_channel", action="store_false",
                             help="one weight scale per tensor (the vendor tools' default; hurts depthwise convs)")
    p.add_argument("--activation-offset", action="store_true", help="asymmetric activations (zero point)")
    p.add_argument("--bitwidth", type=int, default=8, help="activation bits, 8 (default) to 16; 9-16 are held in 16-bit types, e.g. 12: int12 steps saved as int16 (onnxruntime has no 16-bit integer kernels: an accuracy reference, slower than FP32)")
    p.add_argument("--conv-group", action="store_true", help="group output channels of similar range, one scale per group")
    p.add_argument("--fold-concat-scale", action="store_true", help="give Concat inputs the output's scale")
    p.add_argument("--accuracy-opt", action="store_true", help="keep depthwise convolutions in float")
    p.add_argument("--no-bias-correction", action="store_true", help="do not correct the mean shift of weight rounding")
    p.add_argument("--no-channel-scales", "--no-depthwise-channel-scales", dest="no_channel_scales", action="store_true",
                   help="one scale per tensor also for float-op outputs only convs read "
                        "(default: one step per channel, folded into the conv weights)")
    p.add_argument("--bias-tuning", type=int, default=0, metavar="N",
                   help="after quantizing, run the INT8 model on the first N calibration samples and move each "
                        "conv's bias so its output mean matches FP32, in graph order (0: off; try 32 for deep "
                        "networks whose accuracy swings with the calibration set; adds a fifth to two fifths to the time)")
    p.add_argument("--float-hardswish", action="store_true",
                   help="run HardSwish in float between its QDQ pairs (default: as an INT8 Add and Mul, "
                        "which onnxruntime runs with integer kernels)")
    p.add_argument("--signed-activations", action="store_true",
                   help="symmetric int8 activations only (TensorRT's QDQ rule); default: uint8 with zero points")
    p.add_argument("--quantize-stem", action="store_true",
                   help="also quantize a first conv with <= 4 input channels and the depthwise conv right after it "
                        "(float by default: no speed-up, costly)")
    p.add_argument("--outlier-ratio", type=float, default=2.0,
                   help="MatMul/Gemm whose input max exceeds this many 99.99th percentiles stay float (0: off)")
    p.add_argument("--skew-ratio", type=float, default=0.5,
                   help="signed tensors with |min|/max (or max/|min|) below this get a zero point (0: off)")
    p.add_argument("--fp-inputs", default="", help="these layers and all before them stay float")
    p.add_argument("--fp-outputs", default="", help="these layers and all after them stay float")
    p.add_argument("--fp-blocks", default="", help="from each layer to the next compute layer stays float")
    p.add_argument("--fp-layers", default="", help="these layers stay float")
    p.add_argument("--fp-op-types", default="", help="all layers of these op types stay float")
    p.add_argument("--overrides", help="JSON file of per-layer th_method / th_scale / threshold / float")
    p.add_argument("--dump-stats", help="also save the statistics of this pass (the manual's -dump_dist)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("eval", help="FP32 vs INT8: accuracy, agreement, cosine, latency")
    p.add_argument("fp32_model", help="the FP32 model: ONNX, or Caffe/Darknet/PyTorch/... files (converted first)")
    cli_convert.add_source_args(p)
    p.add_argument("int8_model", help="the INT8 ONNX model (quantize's <stem>_int8.onnx)")
    p.add_argument("--data", required=True, help=cli_data.DATA_HELP)
    cli_data.add_preprocess_args(p)
    p.add_argument("--labels", help=".npy of integer class labels")
    p.add_argument("--output", help="model output to compare (default: the first)")
    p.add_argument("--batch", type=int, dest="batch_size",
                   help="samples per inference batch (default: up to 32 and at most 20 MB of input)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads for the accuracy pass (latency uses one)")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--per-layer", action="store_true", help="also compare every tensor; print the 20 worst")
    p.add_argument("--report", metavar="HTML", help="write a self-contained HTML report (plots need matplotlib)")
    p.add_argument("--quant-json", help="the quantize record for the report (default: <stem>_quant.json beside <stem>_int8.onnx)")
    p.add_argument("--stats", help="calibration statistics for the report's histograms (calibrate / --dump-stats)")

    p = sub.add_parser("inspect", help="list the model's layers (names for the per-layer options)")
    p.add_argument("model", help="ONNX, or Caffe/Darknet/PyTorch/... files (converted in memory first)")
    cli_convert.add_source_args(p)

    from int8kit import cli_lmdb

    cli_lmdb.add_parser(sub)
    cli_data.add_parser(sub)
    cli_convert.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="int8kit: %(message)s")
    try:
        return _run(args)
    except Int8kitError as exc:
        print(f"int8kit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("int8kit: interrupted; no partial output was left behind.", file=sys.stderr)
        if argv is None:  # the console command: skip interpreter teardown, where onnxruntime's
            sys.stdout.flush()  # threads can abort the process (exit 134) after a Ctrl-C
            sys.stderr.flush()
            os._exit(130)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.verb == "lmdb":
        from int8kit import cli_lmdb

        return cli_lmdb.run(args)
    if args.verb == "data":
        return cli_data.run(args)
    if args.verb == "convert":
        return cli_convert.run(args)
    from int8kit import api

    if args.verb == "demo":
        from int8kit.demo import run_demo

        print(run_demo(output_dir=args.output_dir, progress=not args.no_progress))
        return 0
    if args.verb == "inspect":
        from int8kit.describe import describe

        print(describe(args.model, **cli_convert.source_kwargs(args)))
        return 0
    if args.verb == "optimize":
        out = args.output or (str(Path(args.model).with_name(Path(args.model).stem + "_optimized.onnx")) if Path(args.model).name else None)
        result = api.optimize(args.model, output=out, no_fuse=_names(args.no_fuse), **cli_convert.source_kwargs(args))
        for line in result.log:
            print(line)
        print(f"wrote {result.path}")
        return 0
    if args.verb == "calibrate":
        out = args.output or str(Path(args.model).with_name(Path(args.model).stem + "_stats.npz"))
        result = api.calibrate(
            args.model,
            args.data,
            output=out,
            iterations=args.iterations,
            bins=2048 if args.bins is None else args.bins,
            batch_size=args.batch_size,
            no_fuse=_names(args.no_fuse),
            progress=not args.no_progress,
            **cli_data.preprocess_kwargs(args),
            **cli_convert.source_kwargs(args),
        )
        print(f"calibrated {len(result.stats.tensors)} tensors on {result.stats.samples} samples in {result.seconds:.1f} s; wrote {result.path}")
        return 0
    if args.verb == "quantize":
        return _quantize(api, args)
    if args.verb == "eval":
        result = api.evaluate(
            args.fp32_model,
            args.int8_model,
            args.data,
            labels=args.labels,
            output=args.output,
            batch_size=args.batch_size,
            threads=args.threads,
            latency=not args.no_latency,
            progress=not args.no_progress,
            per_layer=args.per_layer,
            report=args.report,
            quant_json=args.quant_json,
            stats=args.stats,
            **cli_data.preprocess_kwargs(args),
            **cli_convert.source_kwargs(args),
        )
        payload = result.to_dict()
        if not args.per_layer:
            payload.pop("layers", None)
        print(json.dumps(payload, indent=2) if args.json else result.to_table())
        if args.per_layer and not args.json:
            from int8kit.evaluation.layerwise import layer_table

            print(f"\nworst {min(20, len(result.layers))} of {len(result.layers)} tensors (relative error, up to 32 samples)")
            print(layer_table(result.layers, worst=20))
        if args.report:
            print(f"wrote {args.report}", file=sys.stderr if args.json else sys.stdout)
        return 0
    raise ConfigError(f"unknown verb '{args.verb}'")


def _quantize(api, args: argparse.Namespace) -> int:
    result = api.quantize(
        args.model,
        args.data,
        stats=args.stats,
        output_dir=args.output_dir,
        th_method=args.th_method,
        th_params=_th_params(args.th_param, args.percentile, args.th_method),
        method_rules=not args.no_method_rules,
        per_channel=args.per_channel,
        activation_offset=args.activation_offset,
        bitwidth=args.bitwidth,
        bins=args.bins,
        conv_group=args.conv_group,
        fold_concat_scale=args.fold_concat_scale,
        accuracy_opt=args.accuracy_opt,
        bias_correction=not args.no_bias_correction,
        channel_scales=not args.no_channel_scales,
        integer_hardswish=not args.float_hardswish,
        bias_tuning=args.bias_tuning,
        stem_float=not args.quantize_stem,
        signed_activations=args.signed_activations,
        outlier_ratio=args.outlier_ratio,
        skew_ratio=args.skew_ratio,
        fp_inputs=_names(args.fp_inputs),
        fp_outputs=_names(args.fp_outputs),
        fp_blocks=_names(args.fp_blocks),
        fp_layers=_names(args.fp_layers),
        fp_op_types=_names(args.fp_op_types),
        overrides=args.overrides,
        iterations=args.iterations,
        batch_size=args.batch_size,
        no_fuse=_names(args.no_fuse),
        dump_stats=args.dump_stats,
        progress=not args.no_progress,
        **cli_data.preprocess_kwargs(args),
        **cli_convert.source_kwargs(args),
    )
    summary = {
        "int8_model": str(result.int8_model),
        "fp32_optimized_model": str(result.fp32_optimized_model),
        "quant_json": str(result.quant_json),
        "calibration_table": str(result.calibration_table),
        "tensorrt_cache": str(result.tensorrt_cache),
        "quantized_tensors": sum(1 for t in result.plan.tensors.values() if t.kind == "activation"),
        "float_nodes": len(result.plan.float_nodes),
        **({"bias_tuned_convs": result.bias_tuned} if result.config.bias_tuning else {}),
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:22s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
