"""Where onnxruntime spends a model's time, op type by op type (``int8kit eval --profile``).

The latency check says whether INT8 is faster and guesses what costs time from the graph; this
asks onnxruntime itself. Each model runs at batch 1 on one thread with onnxruntime's profiler on,
the models taking turns as in ``measure_latencies``; per op type of the graph onnxruntime really
runs (after its fusions: QLinearConv, FusedConv...) come the nodes and the median over runs of
their summed kernel time, in microseconds per inference.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from tabulate import tabulate

from int8kit.evaluate.latency import LATENCY_TURN_RUNS
from int8kit.evaluate.reference import ModelLike

OpTimes = dict[str, tuple[int, float]]  # op type -> (nodes, median microseconds per inference)
PROFILE_RUNS = 100  # counted runs per model


def profile_ops(models: Sequence[ModelLike], feed: dict[str, np.ndarray], *, runs: int = PROFILE_RUNS,
                warmup: int = 10) -> list[OpTimes]:
    """Per op type, the nodes and median kernel microseconds per inference of each model on ``feed``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, model in enumerate(models):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / f"model{i}")
            opts.log_severity_level = 3
            source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)  # a path: external data stays
            sessions.append(ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"]))
        for _ in range(warmup):
            for sess in sessions:
                sess.run(None, feed)
        for start in range(0, runs, LATENCY_TURN_RUNS):
            for sess in sessions:
                for _ in range(min(LATENCY_TURN_RUNS, runs - start)):
                    sess.run(None, feed)
        traces = [json.loads(Path(sess.end_profiling()).read_text()) for sess in sessions]
    return [_op_times(trace, warmup, runs) for trace in traces]


def _op_times(trace: list[dict], warmup: int, runs: int) -> OpTimes:
    """Kernel events of the counted runs (the ``model_run`` events mark where each run starts)."""
    starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    per_run: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(runs))
    nodes: dict[str, set[str]] = defaultdict(set)
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        run = int(np.searchsorted(starts, event["ts"], side="right")) - 1 - warmup
        if 0 <= run < runs:
            op = event["args"]["op_name"]
            nodes[op].add(event["name"])
            per_run[op][run] += event["dur"]
    return {op: (len(nodes[op]), float(np.median(times))) for op, times in per_run.items()}


def op_table(profiles: dict[str, OpTimes], walls_us: dict[str, float] | None = None) -> str:
    """Op types as rows (slowest first), models as columns: ``nodes / us`` per inference, a total
    row of the kernel times and, when given, the wall times timed without the profiler."""
    names = list(profiles)
    ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -max(p.get(op, (0, 0.0))[1] for p in profiles.values()))
    rows = [[op] + [f"{profiles[n][op][0]} / {profiles[n][op][1]:.0f}" if op in profiles[n] else "" for n in names] for op in ops]
    rows.append(["total (kernels)"] + [f"{sum(us for _, us in profiles[n].values()):.0f}" for n in names])
    if walls_us:
        rows.append(["wall"] + [f"{walls_us[n]:.0f}" for n in names])
        rows.append([f"wall / {names[0]}"] + [f"{walls_us[n] / walls_us[names[0]]:.3f}" for n in names])
    return tabulate(rows, headers=["op type (nodes / us per inference)", *names], tablefmt="github")
