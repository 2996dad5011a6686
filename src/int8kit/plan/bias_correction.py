"""Bias correction: remove the mean output shift that weight rounding causes.

Rounding the weights changes every output channel by ``(Wq - W) · x``. Its expectation,
``(Wq - W) · E[x]``, is a constant per output channel that does not average out: with the
non-negative inputs after ReLU it is large for depthwise convolutions (nine weights per channel).
Subtracting it from the bias removes it exactly, using only the per-channel input means that
calibration already collected (padding borders are the one approximation). Pure: statistics and
weights in, a bias shift out.
"""

from __future__ import annotations

import numpy as np
import onnx

from int8kit.numerics import dequantize
from int8kit.plan.graph_facts import conv_group
from int8kit.plan.types import TensorQuant


def weight_error_shift(node: onnx.NodeProto, w: np.ndarray, tq: TensorQuant, input_mean: np.ndarray | None) -> np.ndarray:
    """Expected output change per output channel caused by quantizing ``w`` (zeros when unknown)."""
    err = dequantize(tq.values, tq.scale, tq.zero_point, axis=tq.axis).astype(np.float64) - w.astype(np.float64)
    shift = _SHIFTS.get(node.op_type)
    return shift(node, w, err, input_mean) if shift is not None else np.zeros(w.shape[-1])


def _conv_shift(node: onnx.NodeProto, w: np.ndarray, err: np.ndarray, input_mean: np.ndarray | None) -> np.ndarray:
    out_channels = w.shape[0]
    per_group_in = w.shape[1]
    group = conv_group(node)
    if input_mean is None or input_mean.size != per_group_in * group:
        return np.zeros(out_channels)
    taps = err.reshape(out_channels, per_group_in, -1).sum(axis=2)  # (O, I/g)
    mean = input_mean.reshape(group, per_group_in)
    return np.einsum("goi,gi->go", taps.reshape(group, out_channels // group, per_group_in), mean).reshape(-1)


def _gemm_shift(node: onnx.NodeProto, w: np.ndarray, err: np.ndarray, input_mean: np.ndarray | None) -> np.ndarray:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    err_nk = err if trans_b else err.T  # (N, K)
    if trans_a or input_mean is None or input_mean.size != err_nk.shape[1]:
        return np.zeros(err_nk.shape[0])
    alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
    return alpha * (err_nk @ input_mean)


def _conv_transpose_shift(node: onnx.NodeProto, w: np.ndarray, err: np.ndarray, input_mean: np.ndarray | None) -> np.ndarray:
    group = conv_group(node)
    out_channels = w.shape[1] * group
    if group != 1 or input_mean is None or input_mean.size != w.shape[0]:
        return np.zeros(out_channels)
    return np.einsum("io,i->o", err.reshape(w.shape[0], w.shape[1], -1).sum(axis=2), input_mean)


# How the weight rounding error of each layer type reaches its output channels (the weight's
# layout differs per op; ops without an entry get no correction).
_SHIFTS = {"Conv": _conv_shift, "Gemm": _gemm_shift, "ConvTranspose": _conv_transpose_shift}
