"""Per-channel activation scales for tensors that only depthwise convolutions read.

A feature map's channels can differ 50x in range (PP-LCNet's HardSwish outputs); one INT8 scale
for the whole tensor leaves the small channels a handful of levels. A depthwise conv reads each
channel on its own and its weights are quantized per channel, so the channel factor can move
into them exactly: QuantizeLinear uses one step per channel, the DequantizeLinear before the conv
keeps one scale ``S`` (so onnxruntime still fuses a QLinearConv), and channel ``c`` of the conv's
weights is multiplied by ``step_c / S``. Padding stays exact because every channel shares the
zero point. Pure: a tensor's plan and its per-channel extremes in, steps out.
"""

from __future__ import annotations

import numpy as np

from int8kit.plan.types import INT_RANGES, TensorQuant

# Steps are at most this many times finer than the tensor's (4 bits): a channel nearly silent on
# the calibration data keeps room for what it does on other inputs.
_MAX_GAIN = 16.0


def channel_steps(tq: TensorQuant, channel_min: np.ndarray, channel_max: np.ndarray) -> tuple[int, np.ndarray]:
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
    steps = np.maximum(np.where(steps > 0, steps, scale), scale / _MAX_GAIN)
    best = int(np.argmin((steps**2).sum(axis=1)))
    return int(zeros[best, 0]), steps[best].astype(np.float32)


def noise_reduction(tq: TensorQuant, steps: np.ndarray) -> float:
    """How many times less summed rounding-noise power (sum of squared steps) than one step for all."""
    per_tensor = float(np.asarray(tq.scale).reshape(-1)[0]) ** 2 * steps.size
    return per_tensor / float(np.sum(np.asarray(steps, np.float64) ** 2))
