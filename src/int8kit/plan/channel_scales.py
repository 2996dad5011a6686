"""Per-channel activation scales for tensors that only convolutions read.

A feature map's channels can differ 50x in range (PP-LCNet's HardSwish outputs); one INT8 scale
for the whole tensor leaves the small channels a handful of levels. A conv is linear in each input
channel, so the channel factor can move into its weights exactly: QuantizeLinear uses one step per
channel, the DequantizeLinear before the conv keeps one scale ``S`` (so onnxruntime still fuses a
QLinearConv), and input column ``c`` of the conv's weights is multiplied by ``step_c / S``. A
depthwise conv's weights are per channel anyway; a regular conv's input columns share their
output channel's weight scale, so there the steps stay close to ``S``. Padding stays exact because
every channel shares the zero point. Pure: ``channel_steps`` takes a tensor's plan and its
per-channel extremes and returns the steps; ``assign_channel_steps`` decides which planned tensors
get them.
"""

from __future__ import annotations

import numpy as np

from int8kit.calib.stats import TensorStats
from int8kit.graph.ops import CONV
from int8kit.plan.context import PlanContext
from int8kit.plan.graph_facts import GraphFacts, conv_group
from int8kit.plan.memo import read_only
from int8kit.numerics import INT_RANGES
from int8kit.plan.types import QuantPlan, TensorQuant

# Steps are at most this many times finer than the tensor's (4 bits): a channel nearly silent on
# the calibration data keeps room for what it does on other inputs.
_MAX_GAIN = 16.0
# Before a regular conv the gain divides a whole input column of the weights, which share their
# per-output-channel scale with the other columns: a column shrunk 16x keeps a few weight levels.
# PP-OCRv4 rec, logit error (mean of 4 calibration sets): gain <= 1: 0.18, 2: 0.12, 3-4: worse, 16: 0.18.
_MAX_GAIN_CONV = 2.0
# Per-channel steps cost one float Mul; they must at least halve the summed rounding noise.
_MIN_NOISE_REDUCTION = 2.0
# After a HardSwish they also keep it in float instead of INT8 (plan/integer_ops.py). PP-LCNet
# orientation, 2000 pages, mean of 4 calibration sets (accuracy / cosine / INT8:FP32 latency),
# steps where they cut the noise >= 2x: 94.18 % / 0.9992 / 0.95; >= 2.5x: 94.11 % / 0.9992 / 0.92;
# >= 3x: 94.05 % / 0.9989 / 0.82 (but 93.90 % / 0.9979 on one set); none: 93.88 % / 0.9948 / 0.71
# (FP32 94.25 %). The first, widest HardSwish outputs sit near 2.5-3x and matter most.
_MIN_NOISE_REDUCTION_VS_INTEGER = 2.5


def channel_steps(tq: TensorQuant, channel_min: np.ndarray, channel_max: np.ndarray, max_gain: float = _MAX_GAIN) -> tuple[int, np.ndarray]:
    """The shared zero point and one quantization step per channel for activation ``tq``.

    Each channel keeps its own extremes clipped to the tensor's range ``[tq.lo, tq.hi]`` (so no
    channel is clipped more than before) and gets the finest step that holds them on the shared
    integer grid. The zero point minimises the sum of squared steps (uniform rounding noise of all
    channels); the tensor's own zero point is a candidate, so no channel ends coarser than ``S``
    there and the total never grows.
    """
    qmin, qmax = INT_RANGES[tq.dtype]
    scale = float(np.asarray(tq.scale).reshape(-1)[0])
    hi = np.clip(np.asarray(channel_max, np.float64), 0.0, max(tq.hi, 0.0))
    lo = np.clip(np.asarray(channel_min, np.float64), min(tq.lo, 0.0), 0.0)
    zeros = np.arange(qmin, qmax + 1, dtype=np.float64)[:, None]  # candidate zero points
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(hi > 0, hi / (qmax - zeros), 0.0)
        down = np.where(lo < 0, -lo / (zeros - qmin), 0.0)
    steps = np.nan_to_num(np.maximum(up, down), nan=np.inf, posinf=np.inf)
    steps = np.maximum(np.where(steps > 0, steps, scale), scale / max_gain)
    best = int(np.argmin((steps**2).sum(axis=1)))
    return int(zeros[best, 0]), steps[best].astype(np.float32)


def noise_reduction(tq: TensorQuant, steps: np.ndarray) -> float:
    """How many times less summed rounding-noise power (sum of squared steps) than one step for all."""
    per_tensor = float(np.asarray(tq.scale).reshape(-1)[0]) ** 2 * steps.size
    return per_tensor / float(np.sum(np.asarray(steps, np.float64) ** 2))


def assign_channel_steps(ctx: PlanContext, quantized: set[str], result: QuantPlan,
                         integer_capable: frozenset[str] = frozenset()) -> None:
    """Give one quantization step per channel to 8-bit activations that only convs read.

    ``integer_capable`` names float producers that run in INT8 unless their output gets steps.
    The steps of a tensor depend only on its planned range and grid: memoized in ``ctx.steps``.
    """
    facts, stats = ctx.facts, ctx.stats
    for name, tq in result.tensors.items():
        tstats = stats.tensors.get(name)
        if not _takes_channel_steps(facts, quantized, result, name) or tstats is None or tstats.channel_max is None:
            continue
        if any(tstats.channel_max.size != _input_channels(facts, r) for r in facts.consumers[name]):
            continue
        depthwise = all(facts.is_depthwise(r) for r in facts.consumers[name])
        max_gain = _MAX_GAIN if depthwise else _MAX_GAIN_CONV
        key = (name, tq.dtype, float(tq.scale), tq.lo, tq.hi, max_gain)
        zero_point, steps = ctx.steps.get(key, lambda: _steps_of(tq, tstats, max_gain))
        producer = facts.producer[name].name
        needed = _MIN_NOISE_REDUCTION_VS_INTEGER if producer in integer_capable else _MIN_NOISE_REDUCTION
        if noise_reduction(tq, steps) < needed:
            continue
        tq.zero_point = np.asarray(zero_point, dtype=np.asarray(tq.zero_point).dtype)
        tq.channel_step = steps


def _steps_of(tq: TensorQuant, tstats: TensorStats, max_gain: float) -> tuple[int, np.ndarray]:
    zero_point, steps = channel_steps(tq, tstats.channel_min, tstats.channel_max, max_gain=max_gain)
    return zero_point, read_only(steps)  # shared by every plan that hits the memo


def _takes_channel_steps(facts: GraphFacts, quantized: set[str], result: QuantPlan, name: str) -> bool:
    """An 8-bit activation made by an op that runs in float anyway (HardSwish...) and read only by
    INT8 convs (as their data input). There the per-channel Mul is one more elementwise op; after an INT8 conv it
    would break onnxruntime's fused QLinearConv chain (EfficientNet-Lite0: 0.47 -> 1.0 of FP32 latency)."""
    tq = result.tensors[name]
    producer = facts.producer.get(name)
    readers = facts.consumers.get(name, [])
    return (
        tq.kind == "activation" and tq.dtype in ("int8", "uint8") and name not in facts.graph_outputs
        and producer is not None and producer.name not in quantized and producer.name not in result.fused
        and bool(readers) and all(r.name in quantized and r.op_type == CONV and r.input[0] == name for r in readers)
    )


def _input_channels(facts: GraphFacts, conv) -> int | None:
    """Input channels of a Conv, from its weight's shape (O, C/group, k...)."""
    w = facts.initializers.get(conv.input[1]) if len(conv.input) > 1 else None
    return None if w is None or len(w.dims) < 2 else int(w.dims[1]) * conv_group(conv)
