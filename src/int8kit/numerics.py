"""The one numerics module: quantize/dequantize exactly as ONNX QuantizeLinear/DequantizeLinear.

Rounding is round-half-to-even (``np.rint``), results saturate to the integer range of the
target dtype (``INT_RANGES``), and a 1-D scale/zero point broadcasts along ``axis``.
Every other module that turns floats into integers goes through these functions so the
emitted model, the records and the error analysis all agree bit for bit with the runtime.
"""

from __future__ import annotations

import numpy as np

from int8kit.errors import ConfigError

#: The integer types a tensor can be quantized to, and their ranges.
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
}

# A scale of 0 would divide by zero at run time; a range that collapses to a point gets this.
MIN_SCALE = np.float32(1e-12)

_NP_DTYPES: dict[str, type[np.integer]] = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
}


def int_range(dtype: str) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` for an integer dtype name, raising ``ConfigError`` when unknown."""
    try:
        return INT_RANGES[dtype]
    except KeyError:
        raise ConfigError(
            f"quantization dtype '{dtype}' is not supported; expected one of "
            f"{', '.join(INT_RANGES)}, choose one of those."
        ) from None


def _broadcast(value: np.ndarray, ndim: int, axis: int | None, name: str) -> np.ndarray:
    """Reshape a scalar or 1-D scale/zero point so it broadcasts against an ``ndim`` tensor."""
    value = np.asarray(value)
    if value.size == 1:
        return value.reshape(())
    if value.ndim != 1:
        raise ConfigError(
            f"{name} has shape {value.shape}; expected a scalar or a 1-D array, reshape it."
        )
    if axis is None:
        raise ConfigError(
            f"{name} has {value.size} values but no axis was given; pass the channel axis "
            "or a single value."
        )
    if not -ndim <= axis < ndim:
        raise ConfigError(f"quantization axis {axis} is out of range for a {ndim}-D tensor; pass an axis in [{-ndim}, {ndim - 1}].")
    dims = [1] * ndim
    dims[axis] = value.size
    return value.reshape(dims)


def _check_axis_length(x: np.ndarray, scale: np.ndarray, axis: int | None) -> None:
    """Per-axis parameters must have exactly one value per slice along ``axis``."""
    if scale.size > 1 and axis is not None and x.shape[axis] != scale.size:
        raise ConfigError(
            f"per-axis scale has {scale.size} values but the tensor has {x.shape[axis]} "
            f"along axis {axis}; give one scale per channel."
        )


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    dtype: str,
    axis: int | None = None,
) -> np.ndarray:
    """Quantize ``x`` like ONNX QuantizeLinear: ``saturate(rint(x / scale) + zero_point)``.

    ``scale``/``zero_point`` are scalars (per-tensor) or 1-D arrays along ``axis`` (per-axis).
    The division is done in ``x``'s float precision (float32 unless ``x`` is float64), as the
    runtime does; the zero point is added in float64 so int32 results stay exact.
    """
    qmin, qmax = int_range(dtype)
    x = np.asarray(x)
    ftype = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(ftype, copy=False)
    scale_arr = np.asarray(scale, dtype=ftype)
    _check_axis_length(x, scale_arr, axis)
    s = _broadcast(scale_arr, x.ndim, axis, "scale")
    zp = _broadcast(np.asarray(zero_point, dtype=np.float64), x.ndim, axis, "zero_point")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.rint(x / s).astype(np.float64) + zp
    return np.clip(r, qmin, qmax).astype(_NP_DTYPES[dtype])


def dequantize(
    q: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    axis: int | None = None,
) -> np.ndarray:
    """Dequantize like ONNX DequantizeLinear: ``(float32(q) - float32(zero_point)) * scale``."""
    q = np.asarray(q)
    scale_arr = np.asarray(scale, dtype=np.float32)
    _check_axis_length(q, scale_arr, axis)
    s = _broadcast(scale_arr, q.ndim, axis, "scale")
    zp = _broadcast(np.asarray(zero_point).astype(np.float32), q.ndim, axis, "zero_point")
    return ((q.astype(np.float32) - zp) * s).astype(np.float32)


def scale_zero_point(lo: float, hi: float, dtype: str, symmetric: bool, bits: int | None = None) -> tuple[np.float32, int]:
    """Turn a clipping range into ``(scale, zero_point)`` for ``dtype``, on a grid of ``bits``
    (default: the dtype's width; fewer, e.g. 12 in int16, spread the range over 2**12 steps).

    The range is first widened to contain 0 (so 0.0 is exactly representable, as padding and
    Relu need). Symmetric: zero point 0 for signed types with ``scale = max(|lo|, |hi|) / qmax``;
    for unsigned types (only sensible when ``lo >= 0``) ``scale = hi / qmax`` and zero point 0.
    Asymmetric: ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = round(qmin - lo / scale)``
    clipped to the dtype range. The scale is float32 and never below ``MIN_SCALE``.
    """
    qmin, qmax = int_range(dtype)
    if bits is not None and 2**bits - 1 < qmax - qmin:
        qmin, qmax = (0, 2**bits - 1) if qmin == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError(
            f"clipping range [{lo}, {hi}] is not finite; expected finite numbers, check the "
            "calibration statistics for NaN/Inf."
        )
    if lo > hi:
        raise ConfigError(f"clipping range [{lo}, {hi}] has lo > hi; expected lo <= hi, swap them.")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        if qmin < 0:
            scale = max(abs(lo), abs(hi)) / qmax
        else:
            # An unsigned symmetric grid cannot hold negatives; they saturate to 0.
            scale = hi / qmax
        zero_point = 0
    else:
        scale = (hi - lo) / (qmax - qmin)
        if scale > 0:
            zero_point = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
        else:
            zero_point = 0 if qmin <= 0 <= qmax else qmin
    scale32 = np.float32(max(np.float32(scale), MIN_SCALE))
    return scale32, zero_point
