"""Benchmark int8kit and onnxruntime.quantization on the PP-OCRv4 text recogniser, in one run.

    python benchmarks/bench_ocr.py [--calib 128] [--test 200] [--config "kl pc=--th-method kl --per-channel" ...]
        [--ort-methods MinMax,Entropy,Percentile] [--calib-seeds 0,2,3]

Each quantizer runs in its own subprocess (wall time and peak RSS are its own). Metrics compare
the INT8 model with the FP32 model on rendered English text lines (benchmarks/realdata_ocr.py):
exact match of the greedy CTC decoding (argmax per step, repeats merged, blanks dropped; label
indices, so no dictionary is needed), character error rate of the INT8 decoding against the FP32
decoding (edit distance / FP32 length, summed over lines), and the mean cosine of the per-step
probability vectors.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.bench_eval import load_npz, run_model  # noqa: E402
from benchmarks.ort_baseline import Measured, ort_quantize_measured, run_measured  # noqa: E402
from benchmarks.realdata_common import cache_dir  # noqa: E402
from benchmarks.realdata_ocr import ocr_rec_case  # noqa: E402

DEFAULT_CONFIGS = (  # int8kit's weights are per channel unless --per-tensor
    "kl per-tensor=--th-method kl --per-tensor",
    "kl=--th-method kl",
    "mse=--th-method mse",
    "percentile=--th-method percentile",
    "max=--th-method max",
    "kl acc-opt=--th-method kl --accuracy-opt",
    "mse acc-opt=--th-method mse --accuracy-opt",
)


def ctc_greedy(probs: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of (N, T, C) scores into label-index sequences."""
    best = probs.argmax(-1)
    out = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append(tuple(int(i) for i in row[keep & (row != blank)]))
    return out


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance of two sequences (one row of the DP table at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def ocr_metrics(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Exact match, CER vs FP32 and per-step cosine of INT8 recogniser outputs."""
    ref, got = ctc_greedy(fp32), ctc_greedy(int8)
    errors = sum(edit_distance(r, g) for r, g in zip(ref, got))
    a = fp32.reshape(-1, fp32.shape[-1]).astype(np.float64)
    b = int8.reshape(-1, int8.shape[-1]).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {
        "exact match": float(np.mean([r == g for r, g in zip(ref, got)])),
        "CER": errors / max(1, sum(len(r) for r in ref)),
        "step cosine": float(cos.mean()),
    }


def parse_config(spec: str) -> tuple[str, list[str]]:
    """``"label=--th-method kl --per-channel"`` -> (label, CLI args); no label: the args are it."""
    label, sep, args = spec.partition("=")
    return (label.strip(), shlex.split(args)) if sep else (spec, shlex.split(spec))


def run_int8kit(model: Path, calib: Path, label: str, args: list[str], bench: str = "ocr_rec") -> tuple[Measured, Path]:
    """One int8kit quantize call in a fresh process (outputs under the cache's ``bench_out/<bench>``)."""
    outdir = cache_dir() / "bench_out" / bench / label.replace(" ", "_")
    shutil.rmtree(outdir, ignore_errors=True)
    cmd = [sys.executable, "-m", "int8kit", "quantize", str(model), "--data", str(calib),
           "-o", str(outdir), "--no-progress", "--no-latency-check", *args]
    return run_measured(cmd), outdir / f"{model.stem}_int8.onnx"


def print_calibration_spread(args: argparse.Namespace, seeds: list[int], fp32: np.ndarray,
                             test: dict[str, np.ndarray]) -> None:
    """Every int8kit configuration calibrated on each seed's lines: per-seed, mean and min metrics."""
    rows = []
    for spec in args.config or DEFAULT_CONFIGS:
        label, cli = parse_config(spec)
        exact, cos = [], []
        for seed in seeds:
            case = ocr_rec_case(args.calib, args.test, calib_seed=seed)
            m, out = run_int8kit(case.model_path, case.calib_npz, f"{label} s{seed}", cli)
            if not m.ok or not out.exists():
                exact.append(float("nan"))
                cos.append(float("nan"))
                continue
            res = ocr_metrics(fp32, run_model(out, test))
            exact.append(res["exact match"])
            cos.append(res["step cosine"])
        rows.append([f"int8kit {label}", " ".join(f"{e:.3f}" for e in exact), np.mean(exact), np.min(exact),
                     " ".join(f"{c:.4f}" for c in cos), np.mean(cos)])
        print(tabulate([rows[-1]], floatfmt=".4g"), flush=True)
    print(f"\ncalibration seeds {seeds} ({args.calib} lines each), test {args.test} lines")
    print(tabulate(rows, headers=["tool", "exact match per seed", "mean", "min", "step cosine per seed", "mean"],
                   floatfmt=".4g"))


def main(argv: list[str] | None = None) -> int:
    """Quantize with every configuration and onnxruntime method; print one table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--config", action="append",
                    help="int8kit run as 'label=CLI args' (repeatable; default: several methods)")
    ap.add_argument("--ort-methods", default="MinMax,Entropy",
                    help="onnxruntime CalibrationMethods, comma-separated ('' for none)")
    ap.add_argument("--ort-hist-calib", type=int, default=32,
                    help="calibration lines for onnxruntime Entropy/Percentile (they hold every activation in memory)")
    ap.add_argument("--calib-seeds", default="0",
                    help="several comma-separated seeds (not 1, the test seed): int8kit configs only, "
                         "each calibrated on every seed's lines; prints mean and min (one set is a noisy judge)")
    args = ap.parse_args(argv)
    case = ocr_rec_case(args.calib, args.test)
    test = load_npz(case.test_npz)
    fp32 = run_model(case.model_path, test)
    print(f"PP-OCRv4 rec: calib {args.calib}, test {args.test} rendered lines; output {fp32.shape}")

    seeds = [int(s) for s in args.calib_seeds.split(",") if s]
    if len(seeds) > 1:
        print_calibration_spread(args, seeds, fp32, test)
        return 0
    runs: list[tuple[str, Measured, Path]] = []
    for spec in args.config or DEFAULT_CONFIGS:
        label, cli = parse_config(spec)
        runs.append((f"int8kit {label}", *run_int8kit(case.model_path, case.calib_npz, label, cli)))
    for method in [m for m in args.ort_methods.split(",") if m]:
        out = cache_dir() / "bench_out" / "ocr_rec" / f"ort_{method}.onnx"
        out.unlink(missing_ok=True)
        limit = args.ort_hist_calib if method in ("Entropy", "Percentile") else None
        measured = ort_quantize_measured(case.model_path, case.calib_npz, out, method, limit=limit)
        runs.append((f"ort {method}" + (f" (n={limit})" if limit else ""), measured, out))

    rows = []
    for tool, m, out in runs:
        row = [tool, m.wall_s, m.peak_rss_gb]
        if m.ok and out.exists():
            res = ocr_metrics(fp32, run_model(out, test))
            row += [res["exact match"], res["CER"], res["step cosine"], ""]
        else:
            tail = (m.output.strip().splitlines() or ["no output"])[-1]
            row += [None, None, None, f"rc={m.returncode}: {tail[:70]}"]
        rows.append(row)
        print(tabulate([row], floatfmt=".4g", missingval="-"), flush=True)
    print()
    print(tabulate(rows, headers=["tool", "wall s", "peak RSS GB", "exact match", "CER", "step cosine", "error"],
                   floatfmt=".4g", missingval="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
