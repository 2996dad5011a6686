"""Benchmark int8kit and onnxruntime.quantization on the PP-OCRv4 text detector, in one run.

    python benchmarks/bench_det.py [--calib 32] [--test 24] [--config "kl=--th-method kl" ...]
        [--ort-methods MinMax,Entropy]

Each quantizer runs in its own subprocess (wall time and peak RSS are its own). Metrics compare
the INT8 probability map with FP32's on rendered text pages (benchmarks/realdata_det.py): text
regions as rapidocr binarises the map (recall: FP32 regions an INT8 region matches with IoU > 0.5;
precision the other way round), IoU of the thresholded bitmaps, mean cosine of the maps, and
INT8/FP32 latency at batch 1 with one thread (models take turns of 10 back-to-back runs, median of the runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from tabulate import tabulate  # noqa: E402

from benchmarks.bench_eval import latency_pair_ms, load_npz, run_model  # noqa: E402
from benchmarks.bench_ocr import parse_config, run_int8kit  # noqa: E402
from benchmarks.ort_baseline import Measured, ort_quantize_measured  # noqa: E402
from benchmarks.realdata_common import cache_dir  # noqa: E402
from benchmarks.realdata_det import det_metrics, ocr_det_case  # noqa: E402

DEFAULT_CONFIGS = (
    "kl=--th-method kl",
    "mse=--th-method mse",
    "percentile=--th-method percentile",
    "max=--th-method max",
    "kl bt16=--th-method kl --bias-tuning 16",
)
# 640x640 maps are large: small batches keep the evaluation's memory modest.
BATCH = 4


def main(argv: list[str] | None = None) -> int:
    """Quantize with every configuration and onnxruntime method; print one table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--test", type=int, default=24)
    ap.add_argument("--config", action="append", help="int8kit run as 'label=CLI args' (repeatable)")
    ap.add_argument("--ort-methods", default="MinMax", help="onnxruntime CalibrationMethods, comma-separated")
    ap.add_argument("--ort-hist-calib", type=int, default=8,
                    help="calibration pages for onnxruntime Entropy/Percentile (they hold every activation)")
    ap.add_argument("--latency-runs", type=int, default=15)
    args = ap.parse_args(argv)
    case = ocr_det_case(args.calib, args.test)
    test = load_npz(case.test_npz)
    fp32 = run_model(case.model_path, test, batch=BATCH)
    sample = {k: v[:1] for k, v in test.items()}
    print(f"PP-OCRv4 det: calib {args.calib}, test {args.test} rendered pages at 640x640")

    runs: list[tuple[str, Measured, Path]] = []
    for spec in args.config or DEFAULT_CONFIGS:
        label, cli = parse_config(spec)
        runs.append((f"int8kit {label}", *run_int8kit(case.model_path, case.calib_npz, label, cli, bench="ocr_det")))
    for method in [m for m in args.ort_methods.split(",") if m]:
        out = cache_dir() / "bench_out" / "ocr_det" / f"ort_{method}.onnx"
        out.unlink(missing_ok=True)
        limit = args.ort_hist_calib if method in ("Entropy", "Percentile") else None
        measured = ort_quantize_measured(case.model_path, case.calib_npz, out, method, batch=BATCH, limit=limit)
        runs.append((f"ort {method}" + (f" (n={limit})" if limit else ""), measured, out))

    rows = []
    for tool, m, out in runs:
        row = [tool, m.wall_s, m.peak_rss_gb]
        if m.ok and out.exists():
            res = det_metrics(fp32, run_model(out, test, batch=BATCH))
            ms_fp32, ms_int8 = latency_pair_ms([case.model_path, out], sample, runs=args.latency_runs)
            row += [res["region recall"], res["region precision"], res["bitmap IoU"], res["map cosine"],
                    ms_int8 / ms_fp32, ""]
        else:
            tail = (m.output.strip().splitlines() or ["no output"])[-1]
            row += [None] * 5 + [f"rc={m.returncode}: {tail[:70]}"]
        rows.append(row)
        print(tabulate([row], floatfmt=".4g", missingval="-"), flush=True)
    print(f"\nFP32 text regions on the test pages: {int(det_metrics(fp32, fp32)['regions'])}")
    print(tabulate(rows, headers=["tool", "wall s", "peak RSS GB", "region recall", "region precision", "bitmap IoU",
                                  "map cosine", "INT8/FP32 latency", "error"], floatfmt=".4g", missingval="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
