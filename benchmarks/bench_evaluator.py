"""Benchmark the reusable Evaluator: N INT8 candidates of EfficientNet-Lite0 scored on the same test set.

    python benchmarks/bench_evaluator.py [--samples 500] [--candidates 10] [--rounds 3]

Three ways, timed in the same run and interleaved (each round runs them in a rotated order, so
they share the machine's load), medians over the rounds:
  old    ``compare_models`` once per candidate (the FP32 model runs again every time);
  new    one ``Evaluator`` (fresh disk cache: FP32 reference computed, hashed and stored once),
         ``evaluate`` once per candidate;
  floor  one plain FP32 pass + one plain INT8 pass per candidate (onnxruntime sessions over the
         same batches, session creation included): what any evaluator has to run.
Target: new / floor <= 1.05. Candidates are the INT8 models of the ten threshold methods
(``int8kit quantize --stats``, built once into the cache and not timed).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from benchmarks.bench_eval import load_npz  # noqa: E402
from benchmarks.realdata import cache_dir, get_case  # noqa: E402

METHODS = ("max", "percentile", "kl", "symkl", "jsd", "mse", "admm", "aciq_laplace", "aciq_gauss", "ifmr")


def build_candidates(model: Path, calib: Path, count: int) -> list[Path]:
    """INT8 models of ``count`` threshold methods from one calibration (kept in the cache)."""
    out = cache_dir() / "bench_out" / "evaluator"
    out.mkdir(parents=True, exist_ok=True)
    stats = out / "effnet_stats.npz"
    cli = [sys.executable, "-m", "int8kit"]
    if not stats.exists():
        subprocess.run(cli + ["calibrate", str(model), "--data", str(calib), "--iterations", "256", "-o", str(stats),
                              "--no-progress"], check=True)
    paths = []
    for method in METHODS[:count]:
        target = out / method / f"{model.stem}_int8.onnx"
        if not target.exists():
            subprocess.run(cli + ["quantize", str(model), "--stats", str(stats), "-o", str(out / method),
                                  "--th-method", method, "--no-progress"], check=True)
        paths.append(target)
    return paths


def time_floor(model: Path, candidates: list[Path], data: dict) -> float:
    """One FP32 pass + one INT8 pass per candidate, plain sessions over the evaluator's batches."""
    from int8kit.data.sources import batches_from, model_input_specs
    from int8kit.graph.io import as_model
    from int8kit.runtime.session import make_session

    specs = model_input_specs(as_model(model))
    t0 = time.perf_counter()
    for path in [model, *candidates]:
        session = make_session(path)
        for batch in batches_from(data, specs):
            session.run(None, batch)
    return time.perf_counter() - t0


def time_new(model: Path, candidates: list[Path], data: dict) -> tuple[float, int]:
    """One Evaluator with a fresh disk cache, every candidate scored against it."""
    from int8kit.evaluate import Evaluator

    root = Path(tempfile.mkdtemp(prefix="bench-eval-cache-"))
    try:
        t0 = time.perf_counter()
        ev = Evaluator(model, data, cache=root, progress=False)
        for path in candidates:
            ev.evaluate(path, latency=False)
        return time.perf_counter() - t0, ev.fp32_runs
    finally:
        shutil.rmtree(root, ignore_errors=True)


def time_old(model: Path, candidates: list[Path], data: dict) -> float:
    """``compare_models`` per candidate, no reference cache (what every call cost before)."""
    from int8kit.evaluate import compare_models

    t0 = time.perf_counter()
    for path in candidates:
        compare_models(model, path, data, latency=False, progress=False, cache=False)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    case = get_case("effnet", 256, args.samples)
    candidates = build_candidates(case.model_path, case.calib_npz, args.candidates)
    data = load_npz(case.test_npz)
    runs = {"old": time_old, "new": time_new, "floor": time_floor}
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name in order[r % 3:] + order[: r % 3]:  # rotate: each way runs first, second and last
            got = runs[name](case.model_path, candidates, data)
            if name == "new":
                got, fp32_runs = got
                assert fp32_runs == 1, f"the evaluator ran the FP32 model {fp32_runs} times"
            times[name].append(got)
            print(f"round {r + 1} {name:5s} {got:7.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = args.candidates
    print(f"\nEfficientNet-Lite0, {args.samples} samples, {n} INT8 candidates, median of {args.rounds} interleaved rounds:")
    print(f"  old   compare_models x{n}:                     {med['old']:7.1f} s")
    print(f"  new   one Evaluator, {n} candidates:            {med['new']:7.1f} s")
    print(f"  floor one FP32 pass + {n} INT8 passes:          {med['floor']:7.1f} s")
    ratios = [nw / fl for nw, fl in zip(times["new"], times["floor"])]
    print(f"  new / floor: {med['new'] / med['floor']:.3f} (median of per-round ratios {statistics.median(ratios):.3f}; "
          f"per round: {', '.join(f'{x:.3f}' for x in ratios)}; target <= 1.05)")
    print(f"  old / new:   {med['old'] / med['new']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
