"""ARQ weight quantization (as Huawei AMCT's ``arq_quantize``) and bias quantization.

ARQ is symmetric, signed, zero point 0: the scale of a tensor (``channel_wise: false``) or of
each output channel (``channel_wise: true``) is ``max|w| / (2**(bits-1) - 1)``, so the largest
weight lands exactly on the largest code and nothing saturates. The grid is the restricted
symmetric one, ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``, as AMCT and TensorRT use for weights.
"""

from __future__ import annotations

import logging

import numpy as np

from int8kit.errors import ConfigError
from int8kit.numerics import INT_RANGES, quantize

log = logging.getLogger(__name__)

# A channel whose weights are all zero quantizes to zeros under any scale; 1.0 keeps the
# bias scale (input_scale * weight_scale) in a sane range instead of near 0.
ZERO_CHANNEL_SCALE = np.float32(1.0)
# Channels with only denormal-sized weights (PP-OCRv4 rec has one with max |w| = 3e-40) are zero
# channels too: their own scale would underflow the bias scale to 0 under a 16-bit input scale.
MIN_CHANNEL_SCALE = 1e-30


def weight_qmax(bits: int) -> int:
    """Largest code of the restricted symmetric signed grid for ``bits`` (127 for 8 bits)."""
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ConfigError(f"weight bit width {bits!r} is not supported; expected an integer from 2 to 16, e.g. 8.")
    return 2 ** (int(bits) - 1) - 1


def normalize_axis(axis: int | None, ndim: int, what: str = "weight") -> int | None:
    """Turn a negative axis into a positive one, raising ``ConfigError`` when out of range."""
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise ConfigError(
            f"channel axis {axis} is out of range for a {ndim}-D {what}; expected an axis in "
            f"[{-ndim}, {ndim - 1}], check the op's weight layout."
        )
    return axis % ndim


def channel_absmax(w: np.ndarray, axis: int) -> np.ndarray:
    """``max|w|`` of every slice along ``axis`` (one value per channel), as float64."""
    moved = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0)
    if moved.size == 0:
        return np.zeros(moved.shape[0], dtype=np.float64)
    return np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)


def _safe_scales(absmax: np.ndarray, qmax: int) -> np.ndarray:
    """``absmax / qmax`` as float32, with (practically) all-zero channels given ``ZERO_CHANNEL_SCALE``."""
    scales = np.asarray(absmax, dtype=np.float64) / qmax
    return np.where(scales >= MIN_CHANNEL_SCALE, scales, ZERO_CHANNEL_SCALE).astype(np.float32)


def _storage_dtype(bits: int) -> str:
    return "int8" if bits <= 8 else "int16"


def _check_finite(w: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(w)):
        bad = int(np.count_nonzero(~np.isfinite(w)))
        raise ConfigError(f"{what} holds {bad} NaN/Inf values; expected finite numbers, fix the model's initializer.")


def quantize_weight(
    w: np.ndarray,
    *,
    axis: int | None,
    bits: int = 8,
    channel_scales: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a weight tensor symmetrically (ARQ), per-tensor or per-channel.

    ``axis=None`` gives one scale for the whole tensor; otherwise one scale per slice along
    ``axis`` (0 for Conv/Gemm-with-transB weights, 1 for ConvTranspose). ``channel_scales``
    overrides the computed per-channel scales (e.g. the shared scales of conv grouping); it must
    hold one positive value per channel. Returns ``(values, scale)``: int8 values (int16 above
    8 bits) clipped to ``±(2**(bits-1) - 1)``, and a float32 scale (0-D array per-tensor, 1-D
    per-channel).
    """
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise ConfigError(f"weight has dtype {w.dtype}; expected a float tensor, quantize the float model.")
    _check_finite(w, "weight")
    qmax = weight_qmax(bits)
    axis = normalize_axis(axis, w.ndim)
    if channel_scales is not None:
        if axis is None:
            raise ConfigError("channel_scales were given without an axis; pass the channel axis they belong to.")
        scale = np.asarray(channel_scales, dtype=np.float32).reshape(-1)
        if scale.size != w.shape[axis]:
            raise ConfigError(
                f"channel_scales has {scale.size} values but the weight has {w.shape[axis]} "
                f"channels along axis {axis}; give one scale per channel."
            )
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ConfigError("channel_scales holds zero, negative or non-finite values; expected positive scales.")
    elif axis is None:
        absmax = float(np.abs(w).max()) if w.size else 0.0
        scale = _safe_scales(np.array([absmax]), qmax).reshape(())
    else:
        scale = _safe_scales(channel_absmax(w, axis), qmax)
    q = quantize(w, scale, 0, _storage_dtype(bits), axis=axis if scale.ndim else None)
    # The storage dtype is wider than the restricted grid for bits < 8 and for -128.
    q = np.clip(q, -qmax, qmax).astype(q.dtype)
    return q, scale


def quantize_bias(
    b: np.ndarray,
    input_scale: float,
    weight_scale: np.ndarray,
    *,
    name: str = "bias",
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a bias to int32 with ``scale = input_scale * weight_scale`` and zero point 0.

    This is the scale the integer accumulator of Conv/Gemm works in, so the bias adds without
    rescaling. Values beyond the int32 range saturate; a warning names the count. Returns
    ``(int32 values, float32 scale)`` with the scale's shape following ``weight_scale``.
    """
    b = np.asarray(b, dtype=np.float64)
    _check_finite(b, f"bias '{name}'")
    in_scale = np.float32(input_scale)
    w_scale = np.asarray(weight_scale, dtype=np.float32)
    scale = (in_scale * w_scale).astype(np.float32)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ConfigError(
            f"bias '{name}' would get a zero, negative or non-finite scale (input scale {input_scale}); "
            "expected positive input and weight scales, check the activation range."
        )
    if scale.size > 1 and (b.ndim != 1 or b.size != scale.size):
        raise ConfigError(
            f"bias '{name}' has shape {b.shape} but there are {scale.size} weight scales; "
            "expected a 1-D bias with one value per output channel."
        )
    axis = 0 if scale.size > 1 else None
    qmin, qmax = INT_RANGES["int32"]
    # Division in float64: a float32 quotient near 2**31 would lose its low bits.
    ideal = np.rint(b / (scale.astype(np.float64) if axis is None else scale.astype(np.float64).reshape(-1)))
    clipped = int(np.count_nonzero((ideal < qmin) | (ideal > qmax)))
    if clipped:
        log.warning(
            "bias '%s': %d of %d values exceed the int32 range at scale input*weight and were saturated; "
            "the layer's input range may be too narrow.",
            name,
            clipped,
            b.size,
        )
    q = quantize(b, scale.astype(np.float64), 0, "int32", axis=axis)
    return q, scale
