"""``int8kit lmdb create|info|refresh``: build, inspect and clean LMDB calibration/test sets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from int8kit.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register the ``lmdb`` verb and its sub-commands."""
    p = sub.add_parser("lmdb", help="create, inspect and clean LMDB data sets (manual 003: lmdb_save, refresh_lmdb)")
    cmds = p.add_subparsers(dest="lmdb_cmd", required=True, metavar="{create,info,refresh}", title="commands")

    c = cmds.add_parser("create", help="preprocess images into an LMDB (plus original_images/ for cleaning)")
    c.add_argument("--images", required=True, help="image folder or ImageList.txt (one path per line)")
    c.add_argument("--preprocess", help="preprocessing string, e.g. 'resize_h=224,resize_w=224;mean_value=128,scale=0.0078125'")
    c.add_argument("--preprocess-template", help="a named preprocessing template ('int8kit data templates' lists them)")
    c.add_argument("--shape", required=True, help="input shape N,C,H,W: N samples per record, C,H,W checked per sample")
    c.add_argument("-o", "--output", required=True, help="LMDB folder to create")
    c.add_argument("--no-originals", action="store_true", help="do not save original_images/ (refresh then has nothing to check)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing LMDB at --output once the new one is complete")
    c.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    i = cmds.add_parser("info", help="count, shapes, dtypes, value range, labels and format of an LMDB")
    i.add_argument("db", help="LMDB folder (holding data.mdb)")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    r = cmds.add_parser("refresh", help="drop the samples whose image was deleted from original_images/")
    r.add_argument("db", help="LMDB folder written with originals")


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("(", "").replace(")", "").replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ConfigError(f"--shape must be positive integers N,C,H,W such as 1,3,224,224, got '{text}'.")
    return dims


def run(args: argparse.Namespace) -> int:
    """Run one ``int8kit lmdb`` sub-command."""
    if args.lmdb_cmd == "info":
        return _info(args)
    if args.lmdb_cmd == "refresh":
        from int8kit.data.lmdb_store import refresh_lmdb

        res = refresh_lmdb(args.db)
        print(f"kept {res.kept} samples in {res.records} records, dropped {res.dropped} whose original image was deleted")
        for name in res.dropped_names[:20]:
            print(f"  dropped {name}")
        if len(res.dropped_names) > 20:
            print(f"  ... and {len(res.dropped_names) - 20} more")
        return 0
    return _create(args)


def _info(args: argparse.Namespace) -> int:
    from int8kit.data.lmdb_source import describe_lmdb

    info = describe_lmdb(args.db, progress=not args.no_progress)
    inputs = {
        name: {"shape": [list(s) for s in sorted(a["shapes"])], "dtype": str(a["dtype"]), "min": a["min"], "max": a["max"]}
        for name, a in info.arrays.items()
    }
    if args.json:
        print(json.dumps({"path": str(info.path), "format": info.kind, "records": info.records, "samples": info.samples,
                          "inputs": inputs, "labels": info.labels, "original_images": info.originals}, indent=2))
        return 0
    print(f"LMDB      {info.path}")
    print(f"format    {info.kind}{' (CHW BGR images)' if info.kind.startswith('caffe') else ''}")
    print(f"records   {info.records}")
    print(f"samples   {info.samples}")
    print(f"labels    {info.labels}")
    print(f"originals {info.originals} JPEG files in original_images/")
    print(f"{'input':<16}{'sample shape':<20}{'dtype':<10}{'min':>12}{'max':>12}")
    for name, a in inputs.items():
        shapes = " | ".join("x".join(map(str, s)) for s in a["shape"])
        print(f"{name:<16}{shapes:<20}{a['dtype']:<10}{a['min']:>12.6g}{a['max']:>12.6g}")
    return 0


def _create(args: argparse.Namespace) -> int:
    from int8kit.data.lmdb_create import create_from_images

    shape = _shape(args.shape)
    res = create_from_images(
        args.images, args.output, preprocess=args.preprocess, template=args.preprocess_template, shape=shape,
        originals=not args.no_originals, overwrite=args.overwrite, strict=args.strict, progress=not args.no_progress,
    )
    print(f"wrote {res.samples} samples in {res.records} records of {shape[0]} to {res.path}"
          f"{f' ({res.skipped} unreadable images skipped)' if res.skipped else ''}")
    return 0

