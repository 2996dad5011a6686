"""Benchmark the reusable Evaluator: N INT8 candidates of EfficientNet-Lite0 scored on the same test set.

    python benchmarks/bench_evaluator.py [--samples 500] [--candidates 10] [--rounds 5]

Three ways, timed in the same run and interleaved step by step (FP32 steps, then per candidate one
step of each way, in a rotated order, so the three share the machine's load), medians over rounds:
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


def _fp32_pass(model: Path, data: dict) -> float:
    """One plain pass of ``model`` over the evaluator's batches (session creation included)."""
    from int8kit.data.sources import batches_from, model_input_specs
    from int8kit.graph.io import as_model
    from int8kit.runtime.session import make_session

    t0 = time.perf_counter()
    session = make_session(model)
    for batch in batches_from(data, model_input_specs(as_model(model))):
        session.run(None, batch)
    return time.perf_counter() - t0


class OrtClock:
    """Seconds spent inside onnxruntime (session creation and runs): the rest of a way's wall time
    is its own overhead, which the machine's load stretches far less than the passes."""

    def __init__(self) -> None:
        import onnxruntime as ort

        self.seconds = 0.0
        for name in ("run", "_create_inference_session"):
            real = getattr(ort.InferenceSession, name)

            def timed(*args, _real=real, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(ort.InferenceSession, name, timed)


CLOCK: OrtClock | None = None


def one_round(model: Path, candidates: list[Path], data: dict, rotate: int) -> tuple[dict[str, float], dict[str, float]]:
    """The three ways, interleaved step by step so that they share the machine's load: first the
    FP32 steps (a plain FP32 pass; a new Evaluator computing, hashing and storing its reference in
    a fresh cache), then per candidate a plain INT8 pass, ``Evaluator.evaluate`` and
    ``compare_models``, in an order rotated per step."""
    from int8kit.evaluate import Evaluator, compare_models

    root = Path(tempfile.mkdtemp(prefix="bench-eval-cache-"))
    totals = {"old": 0.0, "new": 0.0, "floor": 0.0}
    holder: dict[str, Evaluator] = {}

    def new_reference() -> None:
        holder["ev"] = Evaluator(model, data, cache=root, progress=False)
        holder["ev"].reference  # noqa: B018  (computes the FP32 reference)

    outside = {"old": 0.0, "new": 0.0, "floor": 0.0}  # wall time outside onnxruntime

    def timed(name, fn) -> float:
        ort0, t0 = CLOCK.seconds, time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        outside[name] += wall - (CLOCK.seconds - ort0)
        return wall

    try:
        first = [("floor", lambda: _fp32_pass(model, data)), ("new", new_reference)]
        for name, fn in first[rotate % 2:] + first[: rotate % 2]:
            totals[name] += timed(name, fn)
        for k, path in enumerate(candidates):
            steps = [("floor", lambda p=path: _fp32_pass(p, data)),
                     ("new", lambda p=path: holder["ev"].evaluate(p, latency=False)),
                     ("old", lambda p=path: compare_models(model, p, data, latency=False, progress=False, cache=False))]
            r = (rotate + k) % 3
            for name, fn in steps[r:] + steps[:r]:
                totals[name] += timed(name, fn)
        assert holder["ev"].fp32_runs == 1, "the evaluator ran the FP32 model more than once"
        return totals, outside
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    case = get_case("effnet", 256, args.samples)
    candidates = build_candidates(case.model_path, case.calib_npz, args.candidates)
    data = load_npz(case.test_npz)
    global CLOCK
    CLOCK = OrtClock()
    times: dict[str, list[float]] = {"old": [], "new": [], "floor": []}
    extra: list[float] = []  # the evaluator's own time beyond the floor's, outside onnxruntime
    for r in range(args.rounds):
        got, outside = one_round(case.model_path, candidates, data, rotate=r)
        for name, t in got.items():
            times[name].append(t)
        extra.append((outside["new"] - outside["floor"]) / got["floor"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in got.items())
              + f", new/floor {got['new'] / got['floor']:.3f}; outside onnxruntime: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in outside.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = args.candidates
    ratios = [nw / fl for nw, fl in zip(times["new"], times["floor"])]
    print(f"\nEfficientNet-Lite0, {args.samples} samples, {n} INT8 candidates, {args.rounds} interleaved rounds "
          f"(median seconds):")
    print(f"  old   compare_models x{n}:                 {med['old']:7.1f} s")
    print(f"  new   one Evaluator, {n} candidates:        {med['new']:7.1f} s")
    print(f"  floor one FP32 pass + {n} INT8 passes:      {med['floor']:7.1f} s")
    print(f"  new / floor: median of per-round ratios {statistics.median(ratios):.3f}, all rounds pooled "
          f"{sum(times['new']) / sum(times['floor']):.3f} (per round: {', '.join(f'{x:.3f}' for x in ratios)}; target <= 1.05)")
    print(f"  the evaluator's own time outside onnxruntime, beyond the floor's: {statistics.median(extra) * 100:+.1f} % "
          "of the floor (median; load-independent part of the overhead)")
    print(f"  old / new: median of per-round ratios {statistics.median(o / nw for o, nw in zip(times['old'], times['new'])):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
