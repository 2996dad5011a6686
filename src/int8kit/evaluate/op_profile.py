"""Where the runtime spends a model's time, op type by op type (``int8kit eval --profile``).

The latency check says whether INT8 is faster and guesses what costs time from the graph; this
asks the runtime itself. Each model runs at batch 1 on one thread with the runtime's profiler on,
the models taking turns as in ``measure_latencies``; per op type of the graph the runtime really
runs (after its fusions: onnxruntime's QLinearConv or FusedConv; OpenVINO's node types with the
precision each kernel ran in, e.g. ``Convolution (I8)``) come the nodes and the median over runs
of their summed time, in microseconds per inference.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tabulate import tabulate

from int8kit.evaluate.latency import LATENCY_TURN_RUNS
from int8kit.evaluate.reference import ModelLike

OpTimes = dict[str, tuple[int, float]]  # op type -> (nodes, median microseconds per inference)
PROFILE_RUNS = 100  # counted runs per model


class _Tally:
    """Per op type: the nodes seen and the summed microseconds of each counted run."""

    def __init__(self, runs: int) -> None:
        self.per_run: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(runs))
        self.nodes: dict[str, set[str]] = defaultdict(set)

    def add(self, run: int, node: str, op: str, us: float) -> None:
        self.nodes[op].add(node)
        self.per_run[op][run] += us

    def result(self) -> OpTimes:
        return {op: (len(self.nodes[op]), float(np.median(times))) for op, times in self.per_run.items()}


def profile_ops(models: Sequence[ModelLike], feed: dict[str, np.ndarray], *, runs: int = PROFILE_RUNS,
                warmup: int = 10, runtime: str = "onnxruntime") -> list[OpTimes]:
    """Per op type, the nodes and median microseconds per inference of each model on ``feed``, in
    ``runtime`` (``onnxruntime``, or ``openvino`` in its default precision)."""
    if runtime == "openvino":
        return _openvino(models, feed, runs, warmup)
    return _onnxruntime(models, feed, runs, warmup)


def _take_turns(sessions: Sequence[Any], feed: dict[str, np.ndarray], runs: int, warmup: int,
                after_run: Callable[[int, int], None] = lambda model, run: None) -> None:
    """``warmup`` runs each, then ``runs`` counted runs each in turns; ``after_run(model, run)`` after each counted one."""
    for _ in range(warmup):
        for sess in sessions:
            sess.run(None, feed)
    for start in range(0, runs, LATENCY_TURN_RUNS):
        for i, sess in enumerate(sessions):
            for run in range(start, min(start + LATENCY_TURN_RUNS, runs)):
                sess.run(None, feed)
                after_run(i, run)


def _openvino(models: Sequence[ModelLike], feed: dict[str, np.ndarray], runs: int, warmup: int) -> list[OpTimes]:
    from int8kit.runtime.openvino import OpenVinoSession

    sessions = [OpenVinoSession(m, threads=1, profile=True) for m in models]
    tallies = [_Tally(runs) for _ in sessions]

    def record(model: int, run: int) -> None:  # OpenVINO's counters hold the last run only
        for node, op, us in sessions[model].last_run_profile():
            tallies[model].add(run, node, op, us)

    _take_turns(sessions, feed, runs, warmup, record)
    return [t.result() for t in tallies]


def _onnxruntime(models: Sequence[ModelLike], feed: dict[str, np.ndarray], runs: int, warmup: int) -> list[OpTimes]:
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
        _take_turns(sessions, feed, runs, warmup)
        traces = [json.loads(Path(sess.end_profiling()).read_text()) for sess in sessions]
    return [_trace_times(trace, warmup, runs) for trace in traces]


def _trace_times(trace: list[dict], warmup: int, runs: int) -> OpTimes:
    """onnxruntime's kernel events of the counted runs (the ``model_run`` events mark where each run starts)."""
    starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    tally = _Tally(runs)
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        run = int(np.searchsorted(starts, event["ts"], side="right")) - 1 - warmup
        if 0 <= run < runs:
            tally.add(run, event["name"], event["args"]["op_name"], event["dur"])
    return tally.result()


def op_rows(profiles: dict[str, OpTimes], walls_us: dict[str, float] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the op table: op types (slowest first) by models, ``nodes / us`` per
    inference, a total row of the kernel times and, when given, the wall times timed without the profiler."""
    names = list(profiles)
    ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -max(p.get(op, (0, 0.0))[1] for p in profiles.values()))
    rows = [[op] + [f"{profiles[n][op][0]} / {profiles[n][op][1]:.0f}" if op in profiles[n] else "" for n in names] for op in ops]
    rows.append(["total (kernels)"] + [f"{sum(us for _, us in profiles[n].values()):.0f}" for n in names])
    if walls_us:
        rows.append(["wall"] + [f"{walls_us[n]:.0f}" for n in names])
        rows.append([f"wall / {names[0]}"] + [f"{walls_us[n] / walls_us[names[0]]:.3f}" for n in names])
    return ["op type (nodes / us per inference)", *names], rows


def op_table(profiles: dict[str, OpTimes], walls_us: dict[str, float] | None = None) -> str:
    """``op_rows`` as a text table."""
    headers, rows = op_rows(profiles, walls_us)
    return tabulate(rows, headers=headers, tablefmt="github")
