"""Digests of the default INT8 models of the five real models: proof that a refactor changed nothing.

    python benchmarks/model_digests.py [--models effnet,orientation,minilm,ocr_rec,ocr_det]
        [--save DIR] [--compare DIR]

Each model is quantized with ``int8kit.quantize`` and default options on the calibration set its
benchmark uses (bench_quantize.py: 256 samples; bench_ocr.py: 128 lines; bench_det.py: 32 pages).
Prints the sha256 of ``<stem>_int8.onnx`` and of ``<stem>_quant.json`` without the fields that
name the int8kit version or echo the configuration (``version``, ``tool``, ``config``: the
configuration's own layout may change while the decisions stay the same). ``--save DIR`` copies
both files to ``DIR/<model>/``; ``--compare DIR`` checks them against such a copy and, for a
model that differs, names the initializers (max abs difference) and nodes that differ.
Run the old code with ``PYTHONPATH=<checkout>/src`` (the script prints which int8kit it imported).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable (int8kit: PYTHONPATH first)
    _root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(_root))  # holds no int8kit, so PYTHONPATH still chooses which one runs
    sys.path.append(str(_root / "src"))

import numpy as np  # noqa: E402

CALIB = {"effnet": 256, "orientation": 256, "minilm": 256, "ocr_rec": 128, "ocr_det": 32}
VOLATILE_KEYS = ("version", "tool", "config")


def case_for(name: str):
    """The benchmark case of ``name`` (model path and calibration .npz), built once into the cache."""
    if name == "ocr_rec":
        from benchmarks.realdata_ocr import ocr_rec_case
        return ocr_rec_case(CALIB[name], 8)
    if name == "ocr_det":
        from benchmarks.realdata_det import ocr_det_case
        return ocr_det_case(CALIB[name], 2)
    from benchmarks.realdata import get_case
    return get_case(name, CALIB[name], 8)


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def record_digest(path: Path) -> str:
    """sha256 of quant.json without its version/tool/config fields (keys sorted)."""
    doc = json.loads(path.read_text())
    for key in VOLATILE_KEYS:
        doc.pop(key, None)
    return sha256(json.dumps(doc, sort_keys=True).encode())


def quantize_one(name: str, outdir: Path) -> tuple[Path, Path]:
    """Quantize ``name`` with default options into ``outdir``; returns (int8 model, quant.json)."""
    import int8kit

    case = case_for(name)
    res = int8kit.quantize(str(case.model_path), str(case.calib_npz), output_dir=str(outdir), progress=False)
    return Path(res.int8_model), Path(res.quant_json)


def diff_models(old: Path, new: Path) -> list[str]:
    """Human-readable differences of two ONNX models: initializers (max abs diff) and nodes."""
    import onnx
    from onnx import numpy_helper

    a, b = onnx.load(str(old)), onnx.load(str(new))
    lines = []
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    for n in sorted(set(ia) ^ set(ib)):
        lines.append(f"initializer {n!r} only in {'old' if n in ia else 'new'}")
    for n in sorted(set(ia) & set(ib)):
        x, y = ia[n], ib[n]
        if x.dtype != y.dtype or x.shape != y.shape:
            lines.append(f"initializer {n!r}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        elif not np.array_equal(x, y):
            d = np.abs(x.astype(np.float64) - y.astype(np.float64)).max()
            lines.append(f"initializer {n!r}: max abs diff {d:.6g}")
    na = {(n.name or f"#{i}"): n.SerializeToString() for i, n in enumerate(a.graph.node)}
    nb = {(n.name or f"#{i}"): n.SerializeToString() for i, n in enumerate(b.graph.node)}
    lines += [f"node {n!r} only in {'old' if n in na else 'new'}" for n in sorted(set(na) ^ set(nb))]
    lines += [f"node {n!r} differs" for n in sorted(set(na) & set(nb)) if na[n] != nb[n]]
    if not lines and list(na) != list(nb):
        lines.append("same nodes in another order")
    return lines or ["same initializers and nodes; other fields differ (opset, metadata, value_info)"]


def main(argv: list[str] | None = None) -> int:
    """Quantize each model, print digests, optionally save or compare; 1 if any differs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(CALIB), help="comma-separated, from " + ",".join(CALIB))
    ap.add_argument("--save", type=Path, help="copy the INT8 model and quant.json to DIR/<model>/")
    ap.add_argument("--compare", type=Path, help="compare with the files --save wrote to DIR")
    args = ap.parse_args(argv)
    import int8kit

    print(f"int8kit from {Path(int8kit.__file__).parent}")
    failed = 0
    for name in [m for m in args.models.split(",") if m]:
        with tempfile.TemporaryDirectory() as tmp:
            model, record = quantize_one(name, Path(tmp))
            digests = (sha256(model.read_bytes()), record_digest(record))
            print(f"{name:12s} int8.onnx {digests[0]}  quant.json {digests[1]}", flush=True)
            if args.save:
                dest = args.save / name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(model, dest / "int8.onnx")
                shutil.copyfile(record, dest / "quant.json")
            if args.compare:
                ref = args.compare / name
                same = (sha256((ref / "int8.onnx").read_bytes()), record_digest(ref / "quant.json")) == digests
                print(f"{name:12s} {'identical' if same else 'DIFFERENT'}", flush=True)
                if not same:
                    failed += 1
                    for line in diff_models(ref / "int8.onnx", model)[:40]:
                        print(f"    {line}")
                    if record_digest(ref / "quant.json") != digests[1]:
                        print("    quant.json records differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
