"""GPTQ-style weight rounding: choose each weight's INT8 grid point so the layer's output error on
calibration data is small, not each weight's own error.

Round-to-nearest minimizes ``|W - Wq|`` weight by weight; what matters is the output error
``(W - Wq) x``, whose mean square per output row is ``d H d^T`` with ``H = E[x x^T]`` over the
layer's inputs (im2col rows for a conv: one row per output pixel, one column per weight of a
group). GPTQ (Frantar et al., 2022) rounds the columns one at a time and moves the error of each
rounded column onto the columns not yet rounded, weighted by the inverse of ``H`` (through its
Cholesky factor), which is the least-squares way for them to cancel it.

What stays as planned: every scale (per channel or per tensor), the restricted INT8 grid, and
which layers are quantized; only which grid point each weight takes changes. With bias
correction on, the mean output shift is removed by the bias anyway, so the rounding minimizes the
error around the mean (``H`` is then the input covariance), and the bias then absorbs the new
rounding's mean shift (measured on the same samples, padding included) before it is quantized
to INT32 again.

``H`` comes from the FP32 model run on at most ``GPTQ_SAMPLES`` calibration samples, a few at a
time: each layer's ``H`` and input mean are summed batch by batch and the inputs are dropped, so
memory is one small batch's feature maps plus one ``K x K`` matrix per layer (per group).
Layers with SNQ-clustered weights keep their codes.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper
from tqdm import tqdm

from int8kit.data.sources import model_input_specs
from int8kit.graph.passes.linear import conv_group, conv_input_index
from int8kit.plan.params import bias_quant
from int8kit.plan.types import QuantPlan, TensorQuant
from int8kit.runtime.session import make_session

# Calibration samples that estimate H. EfficientNet-Lite0 output MSE against FP32 (nearest
# 0.00356): 32 samples 0.00241, 64 0.00237, 128 0.00240 (a probe script, 2026-12-05). 32 is also
# what `int8kit auto --full` keeps for bias tuning and rounds with, so a chosen configuration
# replays to the same model.
GPTQ_SAMPLES = 32
# Samples per FP32 run: every target layer's input comes back at once, and a depthwise conv's
# im2col is k*k times its input. EfficientNet-Lite0 `int8kit quantize` peak RSS: 0.40 GB nearest,
# 0.53 GB with one sample a run, 0.79 GB with four, in the same time (2026-12-05).
_RUN_SAMPLES = 1
# Output pixels per sample that feed H: a larger map is read on a regular sub-grid (every 2nd or
# 4th row and column). 64 x 1024 rows determine a K x K matrix for every K a conv has, and the
# full 112 x 112 maps made the statistics 5x slower for the same rounding.
_PIXELS = 1024
# GPTQ's damping: a share of the mean diagonal added to H, so a nearly singular H (inputs that
# are constant or copies) does not send the error feedback far off. EfficientNet-Lite0, output
# MSE against FP32 on 500 test crops (nearest 0.00356): 0.01 -> 0.00251, 0.03 -> 0.00237,
# 0.1 -> 0.00246, 0.3 -> 0.00257 (a probe script, 2026-12-05 04:00 UTC). GPTQ's act-order
# (columns by falling H diagonal) gave 0.00248 against 0.00251 and was left out.
_DAMP = 0.03
# Columns per lazy-update block (GPTQ's B): a wide layer's later columns are updated by one matrix
# product per block instead of once per column.
_BLOCK = 64


@dataclass(frozen=True)
class _Layer:
    node: str
    op: str
    input: str
    weight: str
    bias: str | None
    groups: int
    kernel: tuple[int, ...]  # a conv's (kh, kw); () for a matrix
    transposed: bool  # a matrix weight stored (K, N): its rows are the transpose


@dataclass
class RoundingReport:
    """What GPTQ rounding did: per layer, the proxy output error ``tr(d H d^T)`` summed over the
    rows, with nearest rounding and with GPTQ (same samples, same H)."""

    layers: int
    nearest: dict[str, float]
    gptq: dict[str, float]


@dataclass
class RoundingMemo:
    """What a search re-uses across plans: per layer (and input channel factors), the summed
    input moments, and the GPTQ codes per weight scale. ``gptq_rounding`` fills it."""

    moments: dict[tuple, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    codes: dict[tuple, np.ndarray] = field(default_factory=dict)


def rounding_samples(tune: object) -> int:
    """How many calibration samples ``weight_rounding`` keeps (0: nearest rounding needs none)."""
    return GPTQ_SAMPLES if getattr(tune, "weight_rounding", "nearest") == "gptq" else 0


def gptq_rounding(fp32: onnx.ModelProto, plan: QuantPlan, batches: list[dict[str, np.ndarray]], *,
                  bias_correction: bool = True, max_samples: int = GPTQ_SAMPLES,
                  progress: bool = True, memo: RoundingMemo | None = None) -> tuple[QuantPlan, RoundingReport]:
    """Return a copy of ``plan`` whose quantized Conv/Gemm/MatMul weights are rounded GPTQ-style
    (module docstring) on the first ``max_samples`` samples of ``batches`` (model feeds), and a
    report. The INT32 (or float) biases absorb the new rounding's mean shift when
    ``bias_correction``. ``memo``: statistics and codes kept between calls (the same samples)."""
    inits = {t.name: t for t in fp32.graph.initializer}
    layers = _targets(fp32, plan, inits)
    report = RoundingReport(len(layers), {}, {})
    if not layers or not batches:
        return plan, report
    weights = {l.node: _weight_rows(l, plan, inits) for l in layers}
    gains = {l.node: _input_gain(l, plan) for l in layers}
    memo = memo if memo is not None else RoundingMemo()
    keys = {l.node: (l.node, None if gains[l.node] is None else gains[l.node].tobytes()) for l in layers}
    missing = [l for l in layers if keys[l.node] not in memo.moments]
    if missing:
        found = _moments(fp32, missing, weights, gains, _limit(fp32, batches, max_samples), progress)
        memo.moments.update({keys[node]: value for node, value in found.items()})
    out = copy.copy(plan)
    out.tensors, out.float_biases = dict(plan.tensors), dict(plan.float_biases)
    for layer in tqdm(layers, desc="GPTQ rounding", unit="layer", file=sys.stderr, disable=not progress, leave=False):
        w = weights[layer.node]
        tq = plan.tensors[layer.weight]
        second, mean, count = memo.moments[keys[layer.node]]
        second, mean = second / count, mean / count
        has_bias = layer.bias is not None and bias_correction
        h = second - np.einsum("gi,gj->gij", mean, mean) if has_bias else second
        scale = _row_scales(tq, w.shape)
        qmax = 2 ** (int(tq.dtype.removeprefix("int")) - 1) - 1
        old = _codes_as_rows(layer, tq, w.shape)
        code_key = keys[layer.node] + (np.asarray(tq.scale).tobytes(), has_bias, qmax)
        if code_key not in memo.codes:
            memo.codes[code_key] = _gptq(w, scale, h, qmax)
        new = memo.codes[code_key]
        report.nearest[layer.node] = _proxy_error(w, old * scale, h)
        report.gptq[layer.node] = _proxy_error(w, new * scale, h)
        if report.gptq[layer.node] >= report.nearest[layer.node]:
            continue  # nothing gained on these samples: the plan's codes stay
        weight = copy.copy(tq)
        weight.values = _rows_as_codes(layer, new, tq)
        out.tensors[layer.weight] = weight
        if has_bias:
            # the bias takes the change of the mean shift: (Wq_new - Wq_old) E[x] per output channel
            delta = np.einsum("grk,gk->gr", (new - old) * scale, mean).reshape(-1)
            _move_bias(out, layer, delta)
    return out, report


def _targets(fp32: onnx.ModelProto, plan: QuantPlan, inits: dict[str, onnx.TensorProto]) -> list[_Layer]:
    """Quantized 2-D Convs, Gemms (no transA) and MatMuls with a constant 2-D weight, in graph order."""
    out = []
    for node in fp32.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        tq = plan.tensors.get(node.input[1])
        if tq is None or tq.kind != "weight" or tq.values is None or tq.method == "snq" or node.input[1] not in inits:
            continue
        if node.input[0] not in plan.tensors:
            continue
        rank = len(inits[node.input[1]].dims)
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv" and (rank != 4 or attrs.get("auto_pad") and attrs["auto_pad"].s not in (b"", b"NOTSET")):
            continue
        if node.op_type != "Conv" and (rank != 2 or ("transA" in attrs and attrs["transA"].i)):
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] and node.op_type != "MatMul" else None
        if bias is not None and bias not in plan.tensors and bias not in plan.float_biases:
            bias = None
        is_conv = node.op_type == "Conv"
        trans_b = node.op_type == "Gemm" and "transB" in attrs and bool(attrs["transB"].i)
        out.append(_Layer(node.name, node.op_type, node.input[0], node.input[1], bias,
                          conv_group(node) if is_conv else 1, tuple(inits[node.input[1]].dims[2:]) if is_conv else (),
                          not is_conv and not trans_b))
    return out


def _weight_rows(layer: _Layer, plan: QuantPlan, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The float weight the plan quantized, as (groups, rows per group, inputs per group): one row
    per output channel, columns in im2col order."""
    w = numpy_helper.to_array(inits[layer.weight]).astype(np.float64)
    if layer.op == "Conv":
        gain = _input_gain(layer, plan)
        if gain is not None:  # the plan quantized the weights times the input's channel factors
            index = conv_input_index(w.shape, layer.groups)
            w = w * gain[index][:, :, None, None]
        return w.reshape(layer.groups, w.shape[0] // layer.groups, -1)
    return (w.T if layer.transposed else w)[None]


def _input_gain(layer: _Layer, plan: QuantPlan) -> np.ndarray | None:
    """Per input channel, ``channel_step / scale`` of a depthwise conv's input (plan/channel_scales.py),
    or None."""
    x = plan.tensors[layer.input]
    if layer.op != "Conv" or x.channel_step is None:
        return None
    return x.channel_step.astype(np.float64) / float(x.scale)


def _row_scales(tq: TensorQuant, shape: tuple[int, ...]) -> np.ndarray:
    """The weight scale of every row, shaped (groups, rows, 1)."""
    return np.broadcast_to(np.asarray(tq.scale, np.float64).reshape(-1), (shape[0] * shape[1],)).reshape(shape[0], shape[1], 1)


def _codes_as_rows(layer: _Layer, tq: TensorQuant, shape: tuple[int, ...]) -> np.ndarray:
    """The plan's codes in the row layout of ``_weight_rows``."""
    codes = np.asarray(tq.values, np.float64)
    return (codes.T if layer.transposed else codes).reshape(shape)


def _rows_as_codes(layer: _Layer, rows: np.ndarray, tq: TensorQuant) -> np.ndarray:
    """Codes in the row layout back in the weight's own layout and dtype."""
    codes = rows.reshape(-1, rows.shape[-1])
    codes = codes.T if layer.transposed else codes
    return np.ascontiguousarray(codes.reshape(np.shape(tq.values))).astype(np.asarray(tq.values).dtype)


def _limit(fp32: onnx.ModelProto, batches: list[dict[str, np.ndarray]], cap: int) -> list[dict[str, np.ndarray]]:
    """The first ``cap`` samples in runs of ``_RUN_SAMPLES`` (a model with a fixed batch keeps its batches)."""
    free = all(spec.batch_dim is None for spec in model_input_specs(fp32))
    out, held = [], 0
    for batch in batches:
        count = len(next(iter(batch.values())))
        step = _RUN_SAMPLES if free else count
        for i in range(0, count, step):
            if held >= cap:
                return out
            take = min(step, cap - held) if free else step
            out.append({k: v[i:i + take] for k, v in batch.items()})
            held += take
    return out


def _moments(fp32: onnx.ModelProto, layers: list[_Layer], weights: dict[str, np.ndarray],
             gains: dict[str, np.ndarray | None], runs: list[dict[str, np.ndarray]],
             progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per layer, the sums of ``x x^T`` (groups, K, K) and ``x`` (groups, K) over its input rows, and
    their count; only one run's inputs are held at a time."""
    graph_inputs = {i.name for i in fp32.graph.input}
    wanted = sorted({l.input for l in layers} - graph_inputs)
    probed = onnx.ModelProto()
    probed.CopyFrom(fp32)
    probed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    session = make_session(probed, reduce_early=True)
    sums: dict[str, list] = {}
    nodes = {n.name: n for n in fp32.graph.node}
    for feed in tqdm(runs, desc="GPTQ statistics", unit="run", file=sys.stderr, disable=not progress, leave=False):
        got = dict(zip(wanted, session.run(wanted, feed)))
        got.update({k: v for k, v in feed.items() if k in graph_inputs})
        for layer in layers:
            rows = _rows(layer, nodes[layer.node], np.asarray(got[layer.input], np.float32), gains[layer.node],
                         weights[layer.node].shape[2])
            second = np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
            first = rows.sum(axis=1).astype(np.float64)
            if layer.node in sums:
                entry = sums[layer.node]
                entry[0] += second
                entry[1] += first
                entry[2] += rows.shape[1]
            else:
                sums[layer.node] = [second, first, rows.shape[1]]
        del got
    return {k: (v[0], v[1], v[2]) for k, v in sums.items()}


def _rows(layer: _Layer, node: onnx.NodeProto, x: np.ndarray, gain: np.ndarray | None, k: int) -> np.ndarray:
    """The layer's input as (groups, rows, K): im2col for a conv, the last axis for a matrix."""
    if layer.op != "Conv":
        return x.reshape(1, -1, k)
    if gain is not None:
        x = x / gain.reshape(1, -1, 1, 1).astype(np.float32)
    attrs = {a.name: list(a.ints) for a in node.attribute if a.ints}
    kh, kw = layer.kernel
    pads = attrs.get("pads", [0, 0, 0, 0])
    strides = attrs.get("strides", [1, 1])
    dil = attrs.get("dilations", [1, 1])
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = (dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1)
    win = sliding_window_view(x, span, axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]
    step = int(np.ceil(np.sqrt(win.shape[2] * win.shape[3] / _PIXELS)))
    win = win[:, :, ::step, ::step]
    n, c, ho, wo = win.shape[:4]
    g = layer.groups
    win = win.reshape(n, g, c // g, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return np.ascontiguousarray(win).reshape(g, n * ho * wo, (c // g) * kh * kw)


def _gptq(w: np.ndarray, scale: np.ndarray, h: np.ndarray, qmax: int) -> np.ndarray:
    """GPTQ codes for rows ``w`` (groups, rows, K) on the grid ``scale * [-qmax, qmax]`` with the
    input matrices ``h`` (groups, K, K): columns left to right, each one's rounding error moved
    onto the later columns through the upper Cholesky factor of ``h``'s inverse."""
    w = w.copy()
    h = h.copy()
    k = h.shape[-1]
    diag = np.einsum("gii->gi", h)
    dead = diag <= 0  # an input that is always zero: its weights do not matter
    diag[dead] = 1.0
    damp = _DAMP * diag.mean(axis=1, keepdims=True)
    h[:, np.arange(k), np.arange(k)] = diag + damp
    try:
        upper = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    except np.linalg.LinAlgError:
        return np.clip(np.round(w / scale), -qmax, qmax)
    codes = np.empty_like(w)
    for start in range(0, k, _BLOCK):  # GPTQ's lazy updates: the columns after a block move once per block
        end = min(start + _BLOCK, k)
        block, errors = w[:, :, start:end], np.empty((w.shape[0], w.shape[1], end - start))
        for i in range(end - start):
            j = start + i
            q = np.clip(np.round(block[:, :, i] / scale[:, :, 0]), -qmax, qmax)
            codes[:, :, j] = q
            errors[:, :, i] = (block[:, :, i] - q * scale[:, :, 0]) / upper[:, j, j][:, None]
            block[:, :, i + 1:] -= errors[:, :, i, None] * upper[:, None, j, j + 1:end]
        w[:, :, end:] -= errors @ upper[:, start:end, end:]
    return codes


def _proxy_error(w: np.ndarray, wq: np.ndarray, h: np.ndarray) -> float:
    """``sum over rows of d H d^T`` with ``d = wq - w``: the mean square output error summed over channels."""
    d = wq - w
    return float(np.sum((d @ h) * d))


def _move_bias(plan: QuantPlan, layer: _Layer, delta: np.ndarray) -> None:
    """Subtract ``delta`` (per output channel) from the layer's bias, INT32 or float."""
    if layer.bias in plan.float_biases:
        plan.float_biases[layer.bias] = (plan.float_biases[layer.bias] - delta).astype(np.float32)
        return
    b = plan.tensors[layer.bias]
    value = np.asarray(b.values, np.float64) * np.asarray(b.scale, np.float64).reshape(-1)
    plan.tensors[layer.bias] = bias_quant(layer.bias, value - delta, float(plan.tensors[layer.input].scale),
                                          plan.tensors[layer.weight].scale)
