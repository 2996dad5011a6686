"""Cost of ``int8kit.quantize`` (default settings: kl, per-channel) against one plain FP32 pass.

    python benchmarks/calib_speed.py [--calib 256] [--repeats 3] [--bias-tuning N]

On EfficientNet-Lite0 with ``--calib`` ImageNet-like calibration crops (benchmarks/realdata.py),
each repeat times, in this process: one onnxruntime pass over the same samples (default graph
optimizations and threads, batches of 32, after one warm-up batch) and one whole ``quantize``
call (optimize, calibrate, plan, emit, write). It prints every repeat (wall and CPU seconds,
per-stage timings) and the medians and the ratio quantize / FP32 pass (issue 2 target: <= 3).
The machine may be shared: compare ratios and medians, not single runs.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tabulate import tabulate  # noqa: E402

import int8kit  # noqa: E402
from benchmarks.realdata import effnet_case  # noqa: E402

BATCH = 32


def fp32_pass(model: Path, feeds: dict[str, np.ndarray]) -> tuple[float, float]:
    """Wall and CPU seconds of one FP32 pass over every sample, in batches of ``BATCH``."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    n = next(iter(feeds.values())).shape[0]
    sess.run(None, {k: v[:BATCH] for k, v in feeds.items()})  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, n, BATCH):
        sess.run(None, {k: v[i : i + BATCH] for k, v in feeds.items()})
    return time.perf_counter() - wall, time.process_time() - cpu


def quantize_call(model: Path, calib: Path, bias_tuning: int = 0) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of one default ``int8kit.quantize`` call, and its per-stage timings."""
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        result = int8kit.quantize(str(model), str(calib), output_dir=out, progress=False, bias_tuning=bias_tuning,
                                  check_latency=False)  # the latency check is timed apart (bench_targets.py)
        return time.perf_counter() - wall, time.process_time() - cpu, result.timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=256, help="calibration samples")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bias-tuning", type=int, default=0, help="also tune biases on this many samples")
    args = ap.parse_args()
    case = effnet_case(args.calib, 64)
    with np.load(case.calib_npz) as z:
        feeds = {k: z[k] for k in z.files}
    rows = []
    for r in range(args.repeats):
        fw, fc = fp32_pass(case.model_path, feeds)
        qw, qc, stages = quantize_call(case.model_path, case.calib_npz, args.bias_tuning)
        rows.append({"repeat": r, "fp32 s": fw, "quantize s": qw, "ratio": qw / fw, "fp32 CPU s": fc, "quantize CPU s": qc,
                     **{f"{k} s": v for k, v in stages.items()}})
    print(tabulate(rows, headers="keys", floatfmt=".2f"))
    fw, qw = statistics.median(r["fp32 s"] for r in rows), statistics.median(r["quantize s"] for r in rows)
    print(f"EfficientNet-Lite0, {args.calib} samples: median FP32 pass {fw:.2f} s, median quantize {qw:.2f} s, "
          f"ratio of medians {qw / fw:.2f}, median ratio {statistics.median(r['ratio'] for r in rows):.2f} (target <= 3); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
