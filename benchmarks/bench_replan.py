"""Re-planning cost: one calibration, then many plan + emit rounds that each change one thing.

    python benchmarks/bench_replan.py [--models effnet,orientation,ocr_rec] [--rounds 50]
        [--before SRC] [--repeat 1] [--gc-freeze]

Per model: the time of the first ``plan()`` (nothing cached; median of 3 cold plans) and of its
``emit_qdq()``, then ``--rounds`` rounds of ``plan()`` + ``emit_qdq()`` to an in-memory model,
each from the default configuration with one change: even rounds keep one INT8 layer float (``fp_layers``), odd rounds give one quantized
activation another threshold method (an override: ``max``, or ``percentile`` where the tensor
already has ``max``). ``--before SRC`` runs the same rounds with the int8kit of another checkout
(``SRC/src``) in its own process, for the "before" column. Every run is a fresh process; with
``--repeat N`` each is run N times, in turns, and the medians are printed.

The model is optimized and calibrated once (the benchmark's calibration set) into the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `benchmarks` importable; int8kit: PYTHONPATH first
    _root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(_root))  # holds no int8kit, so PYTHONPATH still chooses which one runs
    sys.path.append(str(_root / "src"))

from benchmarks.model_digests import case_for  # noqa: E402
from benchmarks.realdata_common import cache_dir  # noqa: E402

MODELS = ("effnet", "orientation", "ocr_rec")
FIRST_REPEATS = 3


def prepared(name: str) -> tuple[Path, Path]:
    """The optimized model and its statistics file, made once into the cache."""
    import int8kit

    case = case_for(name)
    folder = cache_dir() / "replan"
    model, stats = folder / f"{name}_optimized.onnx", folder / f"{name}_stats.npz"
    if not (model.exists() and stats.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        int8kit.optimize(str(case.model_path), output=str(model))
        int8kit.calibrate(str(case.model_path), str(case.calib_npz), output=str(stats), progress=False)
    return model, stats


def round_configs(first_plan, model, rounds: int) -> list[dict]:
    """Keyword changes of each round: one layer float, or one tensor's method overridden."""
    weights = {t.name for t in first_plan.tensors.values() if t.kind == "weight"}
    layers = [n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] in weights]
    acts = [t for t in first_plan.tensors.values() if t.kind == "activation" and t.method not in ("user",)]
    acts = [t for t in acts if any(t.name in n.output for n in model.graph.node)]
    out = []
    for i in range(rounds):
        if i % 2 == 0:
            out.append({"fp_layers": (layers[(i // 2 * 7) % len(layers)],)})
        else:
            tq = acts[(i // 2 * 5) % len(acts)]
            method = "percentile" if tq.method == "max" else "max"
            out.append({"overrides": {tq.name: {"th_method": method}}})
    return out


def make_config(change: dict):
    """The default configuration with ``change`` applied (old and new int8kit alike)."""
    try:
        from int8kit.config import QuantConfig, as_overrides
    except ImportError:  # before the configuration moved to int8kit/config.py
        from int8kit.plan.config import QuantConfig, as_overrides
    change = dict(change)
    if "overrides" in change:
        change["overrides"] = as_overrides(change["overrides"])
    return QuantConfig(**change)


def measure(name: str, rounds: int, gc_freeze: bool = False) -> dict:
    """Run in this process: first plan, then ``rounds`` plan + emit rounds; times in ms.

    ``gc_freeze``: move everything alive after the first plan out of the collector's reach, as a
    long-running search would (a full collection of the imported modules alone takes 4-7 ms)."""
    import gc

    import onnx

    import int8kit
    from int8kit.calib.stats import Stats
    from int8kit.emit.qdq import emit_qdq
    from int8kit.plan.planner import plan

    try:
        from int8kit.plan.context import clear_plan_caches
    except ImportError:  # before re-planning was cached: nothing to clear
        def clear_plan_caches() -> None:
            return None

    model_path, stats_path = prepared(name)
    model, stats = onnx.load(str(model_path)), Stats.load(stats_path)
    firsts, first_emits = [], []
    for _ in range(FIRST_REPEATS):  # a cold plan + emit each time (caches cleared): the median is less noisy
        clear_plan_caches()
        start = time.perf_counter()
        first = plan(model, stats, make_config({}))
        firsts.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        emit_qdq(model, first)
        first_emits.append((time.perf_counter() - start) * 1e3)
    first_ms, first_emit_ms = statistics.median(firsts), statistics.median(first_emits)
    changes = round_configs(first, model, rounds)
    configs = [make_config(c) for c in changes]  # built outside the timed part
    if gc_freeze:
        gc.collect()
        gc.freeze()
    times = []
    start_all = time.perf_counter()
    for config in configs:
        start = time.perf_counter()
        emit_qdq(model, plan(model, stats, config))
        times.append((time.perf_counter() - start) * 1e3)
    total_s = time.perf_counter() - start_all
    return {"model": name, "int8kit": str(Path(int8kit.__file__).parent), "first_ms": first_ms, "first_emit_ms": first_emit_ms,
            "round_median_ms": statistics.median(times), "round_max_ms": max(times), "total_s": total_s}


def run_child(name: str, rounds: int, src: Path | None, gc_freeze: bool = False) -> dict:
    """``measure`` in a fresh process, with the int8kit of ``src`` when given."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--rounds", str(rounds)]
    cmd += ["--gc-freeze"] if gc_freeze else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    """Per-field medians of repeated runs."""
    keys = ("first_ms", "first_emit_ms", "round_median_ms", "round_max_ms", "total_s")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main(argv: list[str] | None = None) -> int:
    """Measure each model (and the --before checkout), print one table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--before", type=Path, help="checkout of the int8kit to compare with (its src/ is imported)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each process, in turns; medians printed")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after the first plan (both sides): rounds without full-collection pauses")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.rounds, args.gc_freeze)))
        return 0
    from tabulate import tabulate

    rows = []
    for name in [m for m in args.models.split(",") if m]:
        prepared(name)
        sides = {"after": None} if args.before is None else {"before": args.before, "after": None}
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(args.repeat):
            for side, src in sides.items():
                runs[side].append(run_child(name, args.rounds, src, args.gc_freeze))
        for side in sides:
            m = median_of(runs[side])
            rows.append([name, side, m["first_ms"], m["first_emit_ms"], m["round_median_ms"], m["round_max_ms"], m["total_s"]])
        print(tabulate(rows[-len(sides):], floatfmt=".4g"), flush=True)
    print(f"\n{args.rounds} rounds of plan + emit, each changing one layer's precision or one tensor's method "
          f"(medians of {args.repeat} run(s) per row{'; gc.freeze() after the first plan' if args.gc_freeze else ''})")
    print(tabulate(rows, headers=["model", "code", "first plan ms", "first emit ms", "plan+emit median ms", "plan+emit max ms",
                                  f"{args.rounds} rounds s"], floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
