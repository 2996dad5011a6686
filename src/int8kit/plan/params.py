"""Turn one tensor's statistics or values into its TensorQuant entry."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.numerics import quantize, scale_zero_point
from int8kit.plan.types import TensorQuant
from int8kit.thresholds import Target, compute_range
from int8kit.weights.arq import quantize_bias, quantize_weight
from int8kit.weights.conv_group import group_channel_scales


def activation_dtype(lo: float, bits: int, symmetric: bool, signed: bool = False) -> str:
    """Unsigned when the range starts at 0 (post-ReLU) or an offset is used; signed otherwise
    (always signed with ``signed``: TensorRT reads only symmetric int8). 9 to 16 bits are held
    in a 16-bit type (the manual's int12: int12 steps, saved as int16)."""
    unsigned = not signed and ((not symmetric) or lo >= 0.0)
    return ("uint" if unsigned else "int") + ("8" if bits <= 8 else "16")


def activation_quant(
    name: str,
    hist: Histogram,
    *,
    method: str,
    params: dict,
    bits: int,
    symmetric: bool,
    th_scale: float = 1.0,
    threshold: float | None = None,
    signed: bool = False,
    domain: tuple[float, float] | None = None,
    ranges: Callable[..., tuple[float, float]] = compute_range,
) -> TensorQuant:
    """Clipping range from the threshold method (or a user threshold), then scale/zero point.

    ``signed`` forces symmetric int8 (zero point 0) even for non-negative tensors. ``domain``: the
    values the consumers tell apart (HardSwish: [-3, inf)); the method's range is intersected with
    it, which only drops codes no consumer can see (the range then gets a zero point). ``ranges``:
    ``compute_range`` or a memoized stand-in with its signature (plan/context.py)."""
    if threshold is not None:
        lo, hi = (0.0 if hist.min >= 0 else -threshold), threshold
        method = "user"
    else:
        lo, hi = ranges(method, hist, Target(bits=bits, symmetric=symmetric), **params)
    lo, hi = lo * th_scale, hi * th_scale
    if symmetric and (hist.min < 0 or signed):
        t = max(abs(lo), abs(hi))
        lo, hi = -t, t
    if domain is not None and max(lo, domain[0]) < min(hi, domain[1]) and (lo < domain[0] or hi > domain[1]):
        lo, hi, symmetric = max(lo, domain[0]), min(hi, domain[1]), False
    dtype = activation_dtype(lo, bits, symmetric, signed)
    scale, zp = scale_zero_point(lo, hi, dtype, symmetric, bits=bits)
    return TensorQuant(
        name=name,
        kind="activation",
        dtype=dtype,
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=np.asarray(zp),
        method=method,
        lo=float(lo),
        hi=float(hi),
        min=float(hist.min),
        max=float(hist.max),
    )


def weight_quant(
    name: str,
    w: np.ndarray,
    *,
    axis: int | None,
    bits: int,
    conv_group: bool,
    min_scale: np.ndarray | None = None,
) -> TensorQuant:
    """Symmetric signed weights, per tensor or per output channel (optionally grouped).

    ``min_scale`` (per output channel) raises scales that are too small for the layer's INT32
    bias: a channel with near-zero weights but a large folded bias would otherwise saturate.
    """
    channel_scales = group_channel_scales(w, axis=axis, bits=bits) if (conv_group and axis is not None) else None
    q, scale = quantize_weight(w, axis=axis, bits=bits, channel_scales=channel_scales)
    if min_scale is not None and np.any(scale < min_scale):
        if axis is None:
            scale = np.asarray(max(float(scale), float(np.max(min_scale))), dtype=np.float32)
            qmax = 2 ** (bits - 1) - 1
            q = np.clip(quantize(w, scale, 0, "int8" if bits <= 8 else "int16"), -qmax, qmax).astype(q.dtype)
        else:
            q, scale = quantize_weight(w, axis=axis, bits=bits, channel_scales=np.maximum(scale, min_scale))
    return TensorQuant(
        name=name,
        kind="weight",
        dtype=f"int{bits}",
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=np.zeros(np.shape(scale), dtype=np.int8),
        axis=axis,
        method="conv_group" if channel_scales is not None else ("per_channel" if axis is not None else "per_tensor"),
        lo=float(w.min()),
        hi=float(w.max()),
        min=float(w.min()),
        max=float(w.max()),
        values=q,
    )


# Largest |bias| / (input scale x weight scale) we accept: int32 with headroom for the accumulator.
BIAS_QMAX = 2.0**30


def bias_min_weight_scale(b: np.ndarray, input_scale: float) -> np.ndarray:
    """Smallest weight scale per channel that keeps the INT32 bias unsaturated."""
    return (np.abs(b) / (input_scale * BIAS_QMAX)).astype(np.float32)


def bias_quant(name: str, b: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> TensorQuant:
    """INT32 bias with scale = input scale x weight scale (what the INT8 kernels accumulate in)."""
    q, scale = quantize_bias(b, input_scale, np.asarray(weight_scale), name=name)
    per_channel = np.ndim(scale) > 0 and np.size(scale) > 1
    return TensorQuant(
        name=name,
        kind="bias",
        dtype="int32",
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=np.zeros(np.shape(scale), dtype=np.int32),
        axis=0 if per_channel else None,
        method="bias",
        lo=float(b.min()) if b.size else 0.0,
        hi=float(b.max()) if b.size else 0.0,
        min=float(b.min()) if b.size else 0.0,
        max=float(b.max()) if b.size else 0.0,
        values=q.reshape(-1),  # 1-D: Conv/Gemm both broadcast it over the output channels
    )
