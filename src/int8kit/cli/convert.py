"""``int8kit convert``: another framework's model to ONNX, with ``--compare`` against its own runtime.

Also the ``--framework/--weights/--input-shapes`` flags that let ``optimize``, ``calibrate``,
``quantize`` and ``eval`` take the original model files directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

FRAMEWORK_CHOICES = ("caffe", "darknet", "pytorch", "onnx", "tensorflow", "paddle", "tflite", "mxnet")

SHAPES_HELP = "input shapes, one per input: '(1,3,224,224)' or '(1,3,224,224);(1,4)' (needed for PyTorch)"


def add_source_args(p: argparse.ArgumentParser) -> None:
    """--framework, --weights, --input-shapes for a verb whose model may be another framework's files."""
    p.add_argument("--framework", choices=FRAMEWORK_CHOICES,
                   help="the model's framework (default: from the extension; non-ONNX models are converted first)")
    p.add_argument("--weights", help="weights file: .caffemodel, Darknet .weights, a PyTorch state dict, .pdiparams")
    p.add_argument("--input-shapes", help=SHAPES_HELP)


def source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The api keyword arguments for the flags of ``add_source_args``."""
    return {"framework": args.framework, "weights": args.weights, "input_shapes": args.input_shapes}


def add_parser(sub: Any) -> None:
    """Register ``int8kit convert``."""
    from int8kit.cli import data as cli_data

    p = sub.add_parser("convert", help="convert a Caffe/Darknet/PyTorch/... model to ONNX (optionally --compare)")
    p.add_argument("--model", required=True,
                   help="deploy.prototxt, model.cfg, model.pt (TorchScript) or package.module:factory, model.onnx, "
                        "a SavedModel folder, model.keras, frozen.pb, model.tflite, model.json/model.pdmodel (Paddle)")
    p.add_argument("-o", "--output", required=True, help="the ONNX file to write")
    add_source_args(p)
    p.add_argument("--input-names", help="comma-separated names for the model inputs")
    p.add_argument("--compare", action="store_true",
                   help="run the original model in its own runtime and the ONNX model in onnxruntime; compare outputs")
    p.add_argument("--compare-all", action="store_true", help="also compare every layer matched by name")
    p.add_argument("--data", help=cli_data.DATA_HELP + " (implies --compare; default: seeded random data)")
    cli_data.add_preprocess_args(p)
    p.add_argument("--samples", type=int, default=8, help="samples to compare (default 8)")
    p.add_argument("--batch", type=int, dest="batch_size", help="batch size for models with a dynamic batch axis")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest allowed error relative to the reference's largest value (default 1e-3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Convert, print what was written and the compare table; 1 when the compare fails the tolerance."""
    from int8kit import api
    from int8kit.cli import data as cli_data

    result = api.convert(
        args.model,
        framework=args.framework,
        weights=args.weights,
        output=args.output,
        input_shapes=args.input_shapes,
        input_names=args.input_names,
        compare=args.compare or args.compare_all or args.data is not None,  # data only serves the compare
        compare_layers=args.compare_all,
        data=args.data,
        tolerance=args.tolerance,
        samples=args.samples,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        **cli_data.preprocess_kwargs(args),
    )
    ok = result.compare is None or result.compare.ok
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        info = result.to_dict()
        print(f"converted {info['framework']} model in {info['seconds']:.1f} s: {info['nodes']} nodes, "
              f"inputs {info['inputs']}, outputs {info['outputs']}")
        if result.compare is not None:
            print(result.compare.to_table())
        print(f"wrote {result.path}")
    if not ok:
        print("int8kit: the converted model differs from the original past --tolerance "
              f"{args.tolerance:g}; see the table.", file=sys.stderr)
        return 1
    return 0
