"""Is the INT8 model faster? Timed against FP32 on the runtime it is for, with what costs time.

INT8 exists to be faster: ``quantize`` ends with this check (a second or two at batch 1, one
thread) and says so when the INT8 model is not, naming what keeps it slow — layers left in float,
float Muls of per-channel steps, HardSwish run in float, Relu/Clip kept as nodes, INT8 weights of
ops without an integer kernel — with the option that trades each.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass, field

import numpy as np
import onnx

from int8kit.analysis.ort_fusion import ACTIVATION_KEPT, RUNS_IN_FLOAT, float_in_onnxruntime
from int8kit.evaluate.latency import measure_latencies
from int8kit.graph.ops import COMPUTE, op_info
from int8kit.plan.types import QuantPlan
from int8kit.runtime.openvino import session_for

BUDGET_S = 2.0  # timing budget of the whole check (both models)
SLOW_RATIO = 0.95  # INT8 at least this close to FP32 is "not faster"


@dataclass
class SpeedCheck:
    """FP32 and INT8 latency on one sample, and what in the INT8 model costs time."""

    fp32_ms: float
    int8_ms: float
    runs: int
    runtime: str = "onnxruntime"
    costs: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.int8_ms / self.fp32_ms

    @property
    def faster(self) -> bool:
        return self.ratio < SLOW_RATIO

    def summary(self) -> str:
        """One line: the ratio and both medians."""
        return (f"INT8/FP32 latency {self.ratio:.2f} ({self.int8_ms:.2f} / {self.fp32_ms:.2f} ms, median of {self.runs} "
                f"runs each, batch 1, one thread, {self.runtime})")

    def advice(self) -> str:
        """What to tell a user whose INT8 model is not faster ('' when it is)."""
        if self.faster:
            return ""
        what = "; ".join(self.costs) if self.costs else "no float islands or extra nodes found: the model may be too small to gain"
        runtime = "" if self.runtime == "onnxruntime" else f" --runtime {self.runtime}"
        return (f"the INT8 model is not faster than FP32 here ({self.ratio:.2f}x): {what}. "
                f"(int8kit eval FP32 INT8 --data TEST{runtime} --profile shows where the time goes)")


def timing_runtime(target: str) -> str | None:
    """The runtime that times the ``target`` form here: OpenVINO for ``openvino`` when it is installed,
    onnxruntime for ``onnxruntime``; ``None`` when that runtime is not available here (TensorRT)."""
    from int8kit.runtime.openvino import openvino_available

    if target == "onnxruntime":
        return "onnxruntime"
    if target == "openvino" and openvino_available():
        return "openvino"
    return None


def timing_feed(model: onnx.ModelProto, reopen: Callable[[], Any] | None) -> dict[str, np.ndarray] | None:
    """One sample to time on: the first of the data (``reopen`` opens it again), or random values
    when the inputs have fixed sizes; ``None`` when neither can be had (a one-shot stream)."""
    from int8kit.data.sources import batches_from, model_input_specs

    specs = model_input_specs(model)
    if reopen is not None:
        data = reopen()
        if not isinstance(data, Iterator):  # a generator was read by calibration already
            return next(iter(batches_from(data, specs, batch_size=1, iterations=1, at_most=True)))
    if any(s.shape is None or any(not isinstance(d, int) or d < 1 for d in s.shape[1:]) for s in specs):
        return None
    rng = np.random.default_rng(0)
    shapes = {s.name: (s.batch_dim or 1, *s.shape[1:]) for s in specs}
    return {s.name: rng.standard_normal(shapes[s.name]).astype(s.dtype) if s.is_float else np.zeros(shapes[s.name], s.dtype)
            for s in specs}


def check_speed(fp32: onnx.ModelProto, int8: onnx.ModelProto, plan: QuantPlan, feed: dict[str, np.ndarray],
                *, runtime: str = "onnxruntime", budget_s: float = BUDGET_S) -> SpeedCheck:
    """Time both models on ``feed`` (taking turns, one thread) within about ``budget_s`` seconds,
    on ``runtime`` (onnxruntime, or OpenVINO in its default precision)."""
    sessions = [session_for(m, runtime, threads=1) for m in (fp32, int8)]
    start = time.perf_counter()
    for sess in sessions:
        sess.run(None, feed)  # first run: allocations, not timed
    one = max(time.perf_counter() - start, 1e-4)
    runs = int(max(3, min(50, budget_s / (2 * one))))
    fp32_ms, int8_ms = measure_latencies(sessions, feed, warmup=1, runs=runs)
    costs = time_costs(int8, plan) if runtime == "onnxruntime" else []  # the costs named are onnxruntime's
    return SpeedCheck(fp32_ms, int8_ms, runs, runtime=runtime, costs=costs)


def time_costs(int8: onnx.ModelProto, plan: QuantPlan) -> list[str]:
    """What in the emitted model runs slower than its INT8 kernels would, with the option for each."""
    ops = Counter(n.op_type for n in int8.graph.node)
    by_name = {n.name: n for n in int8.graph.node}
    costs = []
    floats = [name for name in plan.float_nodes if name in by_name and _is_compute(by_name[name])]
    if floats:
        reasons = Counter(plan.float_nodes[n] for n in floats)
        listed = ", ".join(f"{count} by {why}" for why, count in reasons.most_common(3))
        costs.append(f"{len(floats)} conv/matmul layers run in float ({listed}); each adds a DequantizeLinear "
                     "and QuantizeLinear around it")
    as_run = float_in_onnxruntime(int8, plan)
    dragged = [n for n, why in as_run.items() if why == RUNS_IN_FLOAT]
    if dragged:
        costs.append(f"{len(dragged)} convs with INT8 weights run in float too, because a float layer reads their output "
                     f"unquantized (e.g. {dragged[0]}; keeping that reader in INT8 gives both their integer kernels back)")
    gains = sum(1 for n in int8.graph.node if n.name.endswith("_channel_gain"))
    if gains:
        costs.append(f"{gains} float Muls apply per-channel steps before QuantizeLinear (--no-channel-scales drops them, "
                     "at some accuracy)")
    hardswish = ops["HardSwish"] + ops["HardSigmoid"]
    if hardswish:
        costs.append(f"{hardswish} HardSwish/HardSigmoid run in float between QDQ pairs (drop --float-hardswish, or "
                     "--no-channel-scales where per-channel steps rule out the INT8 form)")
    if plan.keep_activation_nodes and (ops["Relu"] or ops["Clip"]):
        behind = sum(why == ACTIVATION_KEPT for why in as_run.values())
        costs.append(f"{ops['Relu'] + ops['Clip']} Relu/Clip are kept as nodes (--signed-activations or a bitwidth "
                     f"over 8), so onnxruntime runs the {behind} convs before them in float (the default unsigned form "
                     "folds them away)")
    no_kernel = Counter(n.op_type for n in int8.graph.node
                        if n.name not in plan.float_nodes and _is_compute(n) and not op_info(n.op_type).int8_kernel)
    for op_type, count in no_kernel.items():
        costs.append(f"{count} {op_type} have INT8 weights but no integer kernel in onnxruntime (computed in float; "
                     f"--fp-op-types {op_type} keeps the float weights)")
    return costs


def _is_compute(node: onnx.NodeProto) -> bool:
    info = op_info(node.op_type)
    return info is not None and info.role == COMPUTE
