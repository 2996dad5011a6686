"""Benchmark int8kit quantization against onnxruntime.quantization, measured in the same run.

    python benchmarks/bench_quantize.py --model effnet|orientation|minilm|all --calib 256 --test 500
        [--methods kl,max,...] [--skip-ort-entropy] [--variant "LABEL=FLAGS"] [--quick]

Every quantizer runs in its own subprocess, so wall time and peak RSS are its own. Per model it
prints one table (tool, wall s, peak RSS GB, top-1 agreement / accuracy, cosine, INT8/FP32
latency, ratios vs onnxruntime Entropy and MinMax), then int8kit's memory growth from 64 to 512
calibration samples, then (effnet) every int8kit threshold method.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from tabulate import tabulate  # noqa: E402

from benchmarks import bench_eval as ev  # noqa: E402
from benchmarks.ort_baseline import Measured, ort_quantize_measured, run_measured  # noqa: E402
from benchmarks.realdata import Case, cache_dir, get_case  # noqa: E402

MODELS = ("effnet", "orientation", "minilm")
ALL_METHODS = ("max", "percentile", "kl", "symkl", "jsd", "mse", "admm", "aciq_laplace", "aciq_gauss", "ifmr")


def int8kit_quantize_cmd(model: Path, calib_npz: Path, outdir: Path, method: str,
                         per_channel: bool = True) -> tuple[list[str], Path]:
    """The int8kit CLI call for one quantization, and where its INT8 model lands.

    Kept in one place so a change in the CLI is a one-line change here.
    """
    cmd = [sys.executable, "-m", "int8kit", "quantize", str(model), "--data", str(calib_npz),
           "-o", str(outdir), "--th-method", method, "--no-progress", "--no-latency-check"]
    if per_channel:
        cmd.append("--per-channel")
    return cmd, outdir / f"{model.stem}_int8.onnx"


def _run_int8kit(case: Case, calib_npz: Path, method: str, tag: str,
                 extra: Sequence[str] = ()) -> tuple[Measured, Path]:
    outdir = cache_dir() / "bench_out" / case.name / tag
    shutil.rmtree(outdir, ignore_errors=True)
    cmd, out = int8kit_quantize_cmd(case.model_path, calib_npz, outdir, method)
    return run_measured(cmd + list(extra)), out


def _run_ort(case: Case, method: str, limit: int | None = None) -> tuple[Measured, Path]:
    out = cache_dir() / "bench_out" / case.name / f"ort_{method}.onnx"
    out.unlink(missing_ok=True)
    return ort_quantize_measured(case.model_path, case.calib_npz, out, method, limit=limit), out


class Bench:
    """Holds the FP32 reference of one case and evaluates quantized models against it."""

    def __init__(self, case: Case, latency_runs: int) -> None:
        self.case = case
        self.test = ev.load_npz(case.test_npz)
        self.fp32 = ev.case_outputs(case, case.model_path, self.test)
        self.sample = {k: v[:1] for k, v in self.test.items()}
        self.runs = latency_runs
        self.fp32_ms = ev.latency_ms(case.model_path, self.sample, runs=latency_runs)

    def row(self, tool: str, m: Measured, out: Path) -> dict:
        """One table row; failures keep their wall time and show the last error line."""
        row = {"tool": tool, "wall s": m.wall_s, "peak RSS GB": m.peak_rss_gb}
        if not m.ok or not out.exists():
            tail = (m.output.strip().splitlines() or ["no output"])[-1]
            row["error"] = f"rc={m.returncode}: {tail[:70]}"
            return row
        row.update(ev.compare(self.case, self.fp32, ev.case_outputs(self.case, out, self.test)))
        fp32_ms, int8_ms = ev.latency_pair_ms([self.case.model_path, out], self.sample, runs=self.runs)
        row["INT8/FP32 latency"] = int8_ms / fp32_ms
        return row


def _headline(case: Case) -> str:
    return {"classify": "top-1 agr", "labels": "accuracy", "embedding": None}[case.kind] or ""


def print_main_table(case: Case, rows: list[dict]) -> None:
    """Per-model table with ratios vs onnxruntime Entropy and MinMax."""
    refs = {name: next((r for r in rows if r["tool"].startswith(f"ort {name}") and "error" not in r), None)
            for name in ("Entropy", "MinMax")}
    metric = "accuracy" if case.kind == "labels" else "agreement"
    table = []
    for r in rows:
        line = [r["tool"], r["wall s"], r["peak RSS GB"]]
        if case.kind != "embedding":
            line.append(r.get(metric))
        line += [r.get("cosine"), r.get("INT8/FP32 latency")]
        for ref in refs.values():
            line += [r["wall s"] / ref["wall s"] if ref else None,
                     r["peak RSS GB"] / ref["peak RSS GB"] if ref else None]
        line.append(r.get("error", ""))
        table.append(line)
    head = ["tool", "wall s", "peak RSS GB"] + ([_headline(case)] if case.kind != "embedding" else [])
    head += ["cosine", "INT8/FP32 lat", "wall/ortEnt", "RSS/ortEnt", "wall/ortMM", "RSS/ortMM", "error"]
    print(tabulate(table, headers=head, floatfmt=".4g", missingval="-"))


def bench_model(name: str, args: argparse.Namespace) -> None:
    """Run every quantizer on one model and print its tables."""
    case = get_case(name, args.calib, args.test)
    bench = Bench(case, latency_runs=10 if args.quick else 30)
    fp32_pass = ev.fp32_pass_seconds(case)
    print(f"\n=== {name}: {case.model_path.name}, calib {args.calib}, test {args.test} ===")
    methods = args.methods or ["kl"]
    rows = []
    for method in methods[:1]:
        m, out = _run_int8kit(case, case.calib_npz, method, method)
        rows.append(bench.row(f"int8kit {method}", m, out))
    for k, (label, flags) in enumerate(args.variants):  # e.g. "kl bt32=--bias-tuning 32"
        m, out = _run_int8kit(case, case.calib_npz, methods[0], f"variant_{k}", shlex.split(flags))
        rows.append(bench.row(f"int8kit {label}", m, out))
    for method in args.ort_methods:
        limit = args.ort_hist_calib if method in ("Entropy", "Percentile") else None
        m, out = _run_ort(case, method, limit=limit)
        rows.append(bench.row(f"ort {method}" + (f" (n={limit})" if limit else ""), m, out))
    print_main_table(case, rows)
    fp32_row = ev.compare(case, bench.fp32, bench.fp32)
    extra = f", FP32 accuracy {fp32_row['accuracy']:.4f}" if "accuracy" in fp32_row else ""
    print(f"FP32 pass over {args.calib} calibration samples: {fp32_pass:.2f} s; "
          f"FP32 batch-1 latency {bench.fp32_ms:.2f} ms{extra}")
    if not args.quick:
        print_memory_growth(case, methods[0])
    if name == "effnet" and not args.quick:
        print_all_methods(case, bench, args.methods or list(ALL_METHODS))


def print_memory_growth(case: Case, method: str) -> None:
    """int8kit's peak RSS and wall time at 64 vs 512 calibration samples (should be ~flat)."""
    rows = []
    for n in (64, 512):
        big = get_case(case.name, n, 8)  # tiny test split: only the calibration set matters here
        m, out = _run_int8kit(case, big.calib_npz, method, f"growth_{n}")
        rows.append([n, m.wall_s, m.peak_rss_gb, "" if m.ok else f"rc={m.returncode}"])
    if rows[0][2]:
        rows.append(["512/64", rows[1][1] / rows[0][1], rows[1][2] / rows[0][2], ""])
    print(f"\nint8kit {method} memory growth ({case.name}):")
    print(tabulate(rows, headers=["calib samples", "wall s", "peak RSS GB", "error"], floatfmt=".4g"))


def print_all_methods(case: Case, bench: Bench, methods: list[str]) -> None:
    """Every int8kit threshold method on the same calibration set, one table."""
    rows = []
    for method in methods:
        m, out = _run_int8kit(case, case.calib_npz, method, f"method_{method}")
        r = bench.row(method, m, out)
        rows.append([method, r["wall s"], r["peak RSS GB"], r.get("agreement"), r.get("cosine"),
                     r.get("INT8/FP32 latency"), r.get("error", "")])
    print(f"\nint8kit threshold methods ({case.name}):")
    print(tabulate(rows, headers=["method", "wall s", "peak RSS GB", "top-1 agr", "cosine",
                                  "INT8/FP32 lat", "error"], floatfmt=".4g", missingval="-"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick shrinks everything for a smoke run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS + ("all",), default="effnet")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--methods", help="int8kit threshold methods, comma-separated (first = headline)")
    ap.add_argument("--ort-methods", default="MinMax,Entropy,Percentile",
                    help="onnxruntime CalibrationMethods to run, comma-separated")
    ap.add_argument("--skip-ort-entropy", action="store_true",
                    help="skip onnxruntime Entropy (and Percentile): ~16 GB on 256 EfficientNet samples")
    ap.add_argument("--ort-hist-calib", type=int,
                    help="calibration samples for onnxruntime Entropy/Percentile only (memory cap)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="one more int8kit row in the main table with extra quantize flags, "
                         "e.g. 'kl bt32=--bias-tuning 32' (repeatable)")
    ap.add_argument("--quick", action="store_true", help="64 calib / 128 test, no growth or method tables")
    args = ap.parse_args(argv)
    args.methods = [m for m in (args.methods or "").split(",") if m]
    args.ort_methods = [m for m in args.ort_methods.split(",") if m]
    args.variants = [tuple(v.split("=", 1)) for v in args.variant]
    if any(len(v) != 2 for v in args.variants):
        ap.error("--variant takes LABEL=FLAGS, e.g. 'kl bt32=--bias-tuning 32'")
    if args.skip_ort_entropy:  # Percentile keeps the same histograms as Entropy
        args.ort_methods = [m for m in args.ort_methods if m not in ("Entropy", "Percentile")]
    if args.quick:
        args.calib, args.test = min(args.calib, 64), min(args.test, 128)
    return args


def main(argv: list[str] | None = None) -> int:
    """Benchmark the chosen models."""
    args = parse_args(argv)
    for name in MODELS if args.model == "all" else (args.model,):
        bench_model(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
