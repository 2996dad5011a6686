"""SNQ (INT4 non-uniform weights) with and without BN update against uniform INT8, in one run.

    python benchmarks/bench_snq.py [--case effnet|facedet|all] [--calib 256] [--test 500] [--runs 30]

EfficientNet-Lite0: top-1 agreement with FP32 on the ImageNet-like test crops (benchmarks/realdata.py).
Caffe res10 SSD face detector (INT8KIT_FACEDET_DIR, as tests/e2e/test_caffe_facedet.py): face
recall, FP32 faces (confidence >= 0.5) an INT8 detection matches at IoU >= 0.5, on scikit-image
and darknet photos plus LFW mosaics, with the matched boxes' mean IoU and mean |confidence
difference|; calibration on 48 random crops of other photos.
Every variant is quantized through int8kit.quantize from one calibration pass (its statistics are
reused); the SNQ deploy model (4-bit indices + codebooks) must give the fake-quant model's
outputs exactly. Sizes are the files on disk; latency is batch 1, one thread, models taking turns
of back-to-back runs (median), reported as the ratio to FP32.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.bench_eval import latency_pair_ms, load_npz, run_model  # noqa: E402
from benchmarks.realdata_facedet import face_matches, facedet_blob, facedet_calib, facedet_images  # noqa: E402

VARIANTS = {
    "INT8 (arq)": {},
    "SNQ INT4": {"weight_algo": "snq", "weight_bits": 4},
    "SNQ INT4 + BN update": {"weight_algo": "snq", "weight_bits": 4, "update_bn": True},
    "SNQ INT4 d2sampling + BN update": {"weight_algo": "snq", "weight_bits": 4, "snq_init": "d2sampling", "update_bn": True},
}


def quantize_all(model: Path, calib: dict[str, np.ndarray], out: Path) -> dict[str, object]:
    """Every variant's QuantizeResult, from one calibration pass."""
    from int8kit import api

    stats = out / "stats.npz"
    results = {}
    for name, options in VARIANTS.items():
        kwargs = {"dump_stats": stats} if not results else {"stats": stats}
        data = calib if not results or options.get("update_bn") else None
        folder = out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "and")
        results[name] = api.quantize(model, data, output_dir=folder, progress=False, check_latency=False,
                                     **kwargs, **options)
    return results


def sizes_and_latency(fp32: Path, results: dict[str, object], sample: dict[str, np.ndarray], runs: int) -> dict[str, list]:
    """Per variant: fake-quant MB, deploy MB, INT8/FP32 latency (fake-quant model)."""
    models = [fp32] + [Path(r.int8_model) for r in results.values()]
    deploy = next((Path(r.int4_deploy_model) for r in results.values() if r.int4_deploy_model), None)
    if deploy is not None:
        models.append(deploy)
    lat = latency_pair_ms(models, sample, runs=runs)
    out = {"FP32": [os.path.getsize(fp32) / 2**20, None, 1.0, lat[0]]}
    for k, (name, r) in enumerate(results.items()):
        d = os.path.getsize(r.int4_deploy_model) / 2**20 if r.int4_deploy_model else None
        out[name] = [os.path.getsize(r.int8_model) / 2**20, d, lat[k + 1] / lat[0], lat[k + 1]]
    if deploy is not None:
        out["SNQ deploy form"] = [None, os.path.getsize(deploy) / 2**20, lat[-1] / lat[0], lat[-1]]
    return out


def check_deploy(results: dict[str, object], data: dict[str, np.ndarray]) -> None:
    """The deploy form rebuilds the fake-quant weights exactly: identical outputs."""
    for name, r in results.items():
        if r.int4_deploy_model:
            a, b = run_model(Path(r.int8_model), data), run_model(Path(r.int4_deploy_model), data)
            if not np.array_equal(a, b):
                raise SystemExit(f"{name}: the deploy model's outputs differ from the fake-quant model's "
                                 f"(max |diff| {np.abs(a - b).max():.3g})")


def effnet(args: argparse.Namespace, out: Path) -> list[list]:
    from benchmarks.realdata import effnet_case

    case = effnet_case(args.calib, args.test)
    calib, test = load_npz(case.calib_npz), load_npz(case.test_npz)
    results = quantize_all(case.model_path, calib, out)
    ref = run_model(case.model_path, test).argmax(1)
    check_deploy(results, {k: v[:32] for k, v in test.items()})
    table = sizes_and_latency(case.model_path, results, {k: v[:1] for k, v in test.items()}, args.runs)
    rows = []
    for name, (mb, dmb, ratio, ms) in table.items():
        agree = 1.0 if name == "FP32" else (None if name not in results else
                                            float((run_model(Path(results[name].int8_model), test).argmax(1) == ref).mean()))
        rows.append(["EfficientNet-Lite0", name, agree, mb, dmb, ratio, ms])
    return rows


def face_recall(fp32: Path, int8: Path, blobs: list[np.ndarray]) -> tuple[int, int, float, float]:
    """FP32 faces at confidence >= 0.5 that ``int8`` finds at IoU >= 0.5, FP32 faces, and over the
    found ones the mean IoU of the best match and the mean |confidence difference|."""
    ref = [run_model(fp32, {"data": b})[0, 0] for b in blobs]
    got = [run_model(int8, {"data": b})[0, 0] for b in blobs]
    matches = [m for r, g in zip(ref, got) for m in face_matches(r, g)]
    found = [m for m in matches if m is not None]
    return len(found), len(matches), float(np.mean([m[0] for m in found])), float(np.mean([m[1] for m in found]))


def facedet(args: argparse.Namespace, out: Path) -> list[list]:
    import onnx

    from int8kit.importers.caffe import convert

    folder = os.environ.get("INT8KIT_FACEDET_DIR")
    if not folder:
        print("facedet skipped: INT8KIT_FACEDET_DIR is not set (folder with the res10_300x300 SSD face detector)")
        return []
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "facedet.onnx"
    onnx.save(convert(Path(folder) / "deploy.prototxt.txt", Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel"), fp32)
    photos, _ = facedet_images()
    results = quantize_all(fp32, {"data": facedet_calib(48)}, out)
    blobs = [facedet_blob(img) for img in photos.values()]
    check_deploy(results, {"data": blobs[0]})
    table = sizes_and_latency(fp32, results, {"data": blobs[0]}, args.runs)
    rows = []
    for name, (mb, dmb, ratio, ms) in table.items():
        recall = None
        if name in results:
            found, total, iou, conf = face_recall(fp32, Path(results[name].int8_model), blobs)
            recall = f"{found}/{total} = {found / total:.3f} (IoU {iou:.3f}, |dconf| {conf:.4f})"
        rows.append(["res10 SSD faces", name, "1.000" if name == "FP32" else recall, mb, dmb, ratio, ms])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("effnet", "facedet", "all"), default="all")
    p.add_argument("--calib", type=int, default=256, help="EfficientNet-Lite0 calibration crops")
    p.add_argument("--test", type=int, default=500, help="EfficientNet-Lite0 test crops")
    p.add_argument("--runs", type=int, default=30, help="latency runs per model")
    args = p.parse_args(argv)
    headers = ["model", "weights", "agreement / face recall", "fake-quant MB", "deploy MB", "latency / FP32", "ms"]
    with tempfile.TemporaryDirectory() as tmp:
        for case, bench in (("facedet", facedet), ("effnet", effnet)):
            if args.case in (case, "all"):
                rows = bench(args, Path(tmp) / case)
                print(tabulate(rows, headers=headers, floatfmt=".3f"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
