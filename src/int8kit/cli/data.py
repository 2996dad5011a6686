"""``int8kit data ...`` and the preprocessing flags shared by calibrate, quantize and eval."""

from __future__ import annotations

import argparse
from typing import Any

DATA_HELP = (
    ".npy (one input), .npz (one array per input name), a folder of images or an ImageList.txt "
    "(with --preprocess), an LMDB folder (data.mdb) or a Caffe prototxt with a Data layer"
)
PREPROCESS_HELP = (
    "image preprocessing, ops by ';', params by ',', values by ':', e.g. "
    "'resize_side=256;crop_h=224,crop_w=224;mean_value=103.94:116.78:123.68,scale=1.0;bgr2rgb'. "
    "Images enter as BGR (Caffe's order, mean values listed B:G:R); add bgr2rgb for TensorFlow/PyTorch "
    "(RGB) models. Output float32 NCHW (layout=NHWC to change)"
)


def add_preprocess_args(p: argparse.ArgumentParser) -> None:
    """--preprocess, --preprocess-template and --strict for a verb that reads data."""
    p.add_argument("--preprocess", metavar="STR", help=PREPROCESS_HELP)
    p.add_argument("--preprocess-template", metavar="NAME",
                   help="a named preprocessing string instead of --preprocess ('int8kit data templates' lists them)")
    p.add_argument("--strict", action="store_true",
                   help="stop on a file in the image folder/list that is not a readable image (default: skip it with a warning)")


def preprocess_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The api keyword arguments for the flags of ``add_preprocess_args``."""
    return {"preprocess": args.preprocess, "preprocess_template": args.preprocess_template, "strict": args.strict}


def add_parser(sub: Any) -> None:
    """Register ``int8kit data templates``."""
    p = sub.add_parser("data", help="preprocessing templates and data helpers")
    verbs = p.add_subparsers(dest="data_verb", required=True, metavar="{templates}", title="commands")
    t = verbs.add_parser("templates", help="print the named preprocessing templates (--preprocess-template NAME)")
    t.add_argument("--json", action="store_true", help="print them as a JSON object")


def run(args: argparse.Namespace) -> int:
    """Run ``int8kit data <verb>``."""
    from int8kit.data.preprocess import TEMPLATES, parse_preprocess

    if args.data_verb == "templates":
        if args.json:
            import json

            print(json.dumps(TEMPLATES, indent=2))
            return 0
        width = max(map(len, TEMPLATES))
        for name, text in TEMPLATES.items():
            pipe = parse_preprocess(text)
            print(f"{name:{width}s}  {text}")
            print(f"{'':{width}s}  -> {pipe.output_order} float32 {pipe.layout[1:]}")
        print("\nimages enter the pipeline as BGR (as in the manual and Caffe); bgr2rgb makes the output RGB.")
        return 0
    return 2
