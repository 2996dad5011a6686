"""BN update (AMCT ``update_bn``): after weight quantization, re-normalize every quantized conv's
output to the per-channel mean and variance FP32 gives it, measured on calibration batches that
flow through the quantized model; the correction folds into the conv's scales and bias.

Clustering (SNQ) moves a channel's weights enough to shift and scale its output, and the next
BatchNorm, still normalizing with the FP32 statistics, passes the error on. AMCT runs the
quantized network with BatchNorm in training mode for ``bn_update_iterations`` batches, keeps a
moving average of each BN's batch statistics (``bn_moving_average_fraction`` the weight of the
old value), then folds the BNs. int8kit's optimizer has already folded every BN into its conv
(graph/passes/fold_bn.py), so the conv output is what the BN used to produce, and re-estimating
the BN's statistics and re-folding is a per-channel ``z' = a * z_q + c`` on the conv output.
AMCT's target is the BN's (beta, gamma); int8kit takes FP32's own statistics on the same batches
instead: they need no BN parameters (gone after folding), also cover convs that never had a BN,
and leave an unquantized model exactly as it was (AMCT's target would move FP32 itself towards
the calibration set).

Two choices measured on EfficientNet-Lite0 with SNQ (top-1 agreement with FP32 on 200 test crops,
0.705 without the update; measured 2026-12-05 while writing it, see docs/snq.md):
* The statistics are those of the output as the next layer reads it, clipped to its
  QuantizeLinear range (a fused ReLU6 keeps [0, 6]): a channel that is mostly negative before its
  ReLU has a pre-activation mean and variance driven by values nobody reads (0.78, against 0.75
  with pre-activation statistics). The shift is divided by the channel's share of values inside
  the range, as bias tuning does, since only those follow it.
* Convs are corrected one at a time in graph order, each measured with every correction before
  it in place (runtime/piecewise.py: about two passes of the model in all). Correcting all at
  once from one measurement counts upstream errors twice and lost accuracy instead (0.34).

``a`` multiplies the channel's weight scale (the INT8 codes, and so SNQ's 16 levels, stay) and
``c`` joins the bias, quantized again to INT32 at the new scale.
"""

from __future__ import annotations

import copy
import io
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tqdm import tqdm

from int8kit.calib.taps import default_opset
from int8kit.data.sources import model_input_specs
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import DataError
from int8kit.graph.io import write_bytes_atomic
from int8kit.plan.params import BIAS_QMAX, bias_quant
from int8kit.plan.types import QuantPlan
from int8kit.runtime.piecewise import PiecewiseRun
from int8kit.runtime.session import make_session

# samples per update iteration (models with a free batch dimension): the piecewise run holds every
# iteration's feature maps, EfficientNet-Lite0's widest 4.8 MB a sample in float
BN_BATCH = 2
# A channel's scale factor is kept in [1/2, 2]: the update corrects quantization error, and a
# larger factor means its statistics are unreliable (a nearly constant channel).
_MAX_GAIN = 2.0
_MIN_VAR = 1e-12
_MIN_ACTIVE = 0.25


def bn_update_samples(tune: Any) -> int:
    """How many calibration samples ``--update-bn`` keeps (0: off): ``BN_BATCH`` per iteration."""
    return BN_BATCH * tune.bn_update_iterations if tune.update_bn else 0


@dataclass(frozen=True)
class _Conv:
    node: str  # the conv's name (the same in the FP32 and the emitted model)
    input: str
    weight: str
    bias: str
    channels: int


@dataclass
class BnUpdate:
    """What the update did: per conv, the running statistics and the folded factors."""

    convs: int
    gains: dict[str, np.ndarray]
    shifts: dict[str, np.ndarray]
    fp32: dict[str, tuple[np.ndarray, np.ndarray]]  # mean, variance
    quantized: dict[str, tuple[np.ndarray, np.ndarray]]

    def save(self, folder: str | os.PathLike) -> str:
        """Write ``bn_update.npz`` into ``folder`` (created): per conv its gain, shift and the
        FP32 and quantized running means and variances."""
        arrays = {}
        for name in self.gains:
            arrays.update({f"{name}/gain": self.gains[name], f"{name}/shift": self.shifts[name],
                           f"{name}/fp32_mean": self.fp32[name][0], f"{name}/fp32_var": self.fp32[name][1],
                           f"{name}/quant_mean": self.quantized[name][0], f"{name}/quant_var": self.quantized[name][1]})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return str(write_bytes_atomic(os.path.join(os.fspath(folder), "bn_update.npz"), buffer.getvalue()))


def update_bn(fp32: onnx.ModelProto, plan: QuantPlan, batches: list[dict[str, np.ndarray]], *, iterations: int = 30,
              fraction: float = 0.9, progress: bool = True) -> tuple[QuantPlan, BnUpdate]:
    """Return a copy of ``plan`` whose per-channel quantized convs are re-normalized to FP32's
    output statistics (see the module docstring), and what changed. ``batches`` are model feeds
    (calibration samples); the first ``iterations`` of them (in turn, when fewer) are used."""
    convs = _targets(fp32, plan)
    if not convs:
        return plan, BnUpdate(0, {}, {}, {}, {})
    if not batches:
        raise DataError("--update-bn runs the quantized model on calibration samples, but none were kept; pass --data.")
    if all(spec.batch_dim is None for spec in model_input_specs(fp32)):
        batches = _rebatch(batches, BN_BATCH)
    batches = [batches[k % len(batches)] for k in range(iterations)]
    int8 = emit_qdq(fp32, plan)
    dq = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    # a conv onnxruntime runs in float (a float layer reads its output) has float weights: not an INT8 layer
    convs = [c for c in convs if c.weight in dq]
    if not convs:
        return plan, BnUpdate(0, {}, {}, {}, {})
    by_name = {n.name: n for n in int8.graph.node}
    ranges = _ranges(int8, [by_name[c.node].output[0] for c in convs])
    reference, names = _probed(fp32, convs, ranges)
    session = make_session(reference, reduce_early=True)
    ref_runs = [[np.asarray(v, np.float64) for v in session.run(names, b)] for b in batches]
    del session
    run = PiecewiseRun(int8, batches)
    report = BnUpdate(len(convs), {}, {}, {}, {})
    updated = plan
    for j, c in enumerate(tqdm(convs, desc="BN update", unit="conv", file=sys.stderr, disable=not progress, leave=False)):
        raw = by_name[c.node].output[0]
        # the activation input only: the weight's and bias's DequantizeLinear belong to the step,
        # whose initializers change
        ahead = run.pending_for(by_name[c.node].input[:1])
        run.commit(ahead, run.run(ahead))
        step = run.pending_for([raw])
        lo, hi = ranges[j]
        measured = [np.clip(y, lo, hi) for y in run.run(step, fetch=[raw])[raw]]
        q_mean, q_sq = _moving([(y.mean(axis=(0, 2, 3), dtype=np.float64), np.square(y, dtype=np.float64).mean(axis=(0, 2, 3)))
                                for y in measured], fraction)
        active = np.mean([((y > lo) & (y < hi)).mean(axis=(0, 2, 3)) for y in measured], axis=0)
        fp_mean, fp_sq = _moving([(r[2 * j], r[2 * j + 1]) for r in ref_runs], fraction)
        gain, shift = _factors(fp_mean, fp_sq, q_mean, q_sq, active)
        report.gains[c.node], report.shifts[c.node] = gain, shift
        report.fp32[c.node] = (fp_mean, np.maximum(fp_sq - fp_mean ** 2, 0.0))
        report.quantized[c.node] = (q_mean, np.maximum(q_sq - q_mean ** 2, 0.0))
        updated = _folded(updated, [c], {c.node: gain}, {c.node: shift})
        # the conv again with its new weight scale and bias: later convs read the corrected output
        run.commit(step, run.run(step, initializers=_initializers(updated, c, dq)))
    return updated, report


def _moving(values: list[tuple[np.ndarray, np.ndarray]], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's moving average of per-batch (mean, mean of squares): ``fraction`` of the old value
    plus the rest of the new one, batch after batch."""
    mean, sq = values[0]
    for m, s in values[1:]:
        mean, sq = fraction * mean + (1.0 - fraction) * m, fraction * sq + (1.0 - fraction) * s
    return mean, sq


def _initializers(plan: QuantPlan, c: _Conv, dq: dict[str, onnx.NodeProto]) -> dict[str, np.ndarray]:
    """The emitted model's initializers that hold ``c``'s weight scale and bias, from ``plan``."""
    w = plan.tensors[c.weight]
    out = {dq[c.weight].input[1]: np.asarray(w.scale, np.float32)}
    if c.bias in plan.float_biases:
        out[c.bias] = plan.float_biases[c.bias]
    else:
        b = plan.tensors[c.bias]
        out[dq[c.bias].input[0]] = np.asarray(b.values, np.int32)
        out[dq[c.bias].input[1]] = np.asarray(b.scale, np.float32)
    return out


def _targets(fp32: onnx.ModelProto, plan: QuantPlan) -> list[_Conv]:
    """Convs with per-channel quantized weights and a bias (every BN-folded conv has one), in graph order."""
    out = []
    for node in fp32.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or not node.input[2]:
            continue
        w = plan.tensors.get(node.input[1])
        bias = node.input[2]
        if w is None or w.axis != 0 or np.size(w.scale) < 2 or node.input[0] not in plan.tensors:
            continue
        if bias not in plan.tensors and bias not in plan.float_biases:
            continue
        out.append(_Conv(node.name, node.input[0], node.input[1], bias, int(np.size(w.scale))))
    return out


def _ranges(int8: onnx.ModelProto, tensors: list[str]) -> list[tuple[float, float]]:
    """The range the QuantizeLinear after each tensor keeps (what the next layer sees), or
    (-inf, inf) when none quantizes it."""
    inits = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    quantizer = {n.input[0]: n for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    out = []
    for t in tensors:
        q = quantizer.get(t)
        if q is None or q.input[1] not in inits or inits[q.input[1]].size != 1:
            out.append((-np.inf, np.inf))
            continue
        zero = inits[q.input[2]] if len(q.input) > 2 and q.input[2] in inits else np.zeros((), np.uint8)
        info = np.iinfo(zero.dtype)
        scale, z = float(inits[q.input[1]].reshape(-1)[0]), float(zero.reshape(-1)[0])
        out.append(((info.min - z) * scale, (info.max - z) * scale))
    return out


def _probed(model: onnx.ModelProto, convs: list[_Conv], ranges: list[tuple[float, float]]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` that also outputs, per conv, the per-channel mean of its output and of
    the output's square over the batch (onnxruntime reduces the maps; only the means come back)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, opset = out.graph, default_opset(out)
    by_name = {n.name: n for n in g.node}
    names: list[str] = []
    for c, (lo, hi) in zip(convs, ranges):
        y, tag = by_name[c.node].output[0], f"{c.node}/bn"
        g.initializer.extend([numpy_helper.from_array(np.array(max(lo, -3e38), np.float32), f"{tag}_lo"),
                              numpy_helper.from_array(np.array(min(hi, 3e38), np.float32), f"{tag}_hi")])
        g.node.append(helper.make_node("Clip", [y, f"{tag}_lo", f"{tag}_hi"], [f"{tag}_clipped"]))
        y = f"{tag}_clipped"
        g.node.append(helper.make_node("Mul", [y, y], [f"{tag}_square"]))
        if opset >= 18:
            g.initializer.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), f"{tag}_axes"))
        for src, dst in ((y, f"{tag}_mean"), (f"{tag}_square", f"{tag}_meansq")):
            if opset >= 18:
                g.node.append(helper.make_node("ReduceMean", [src, f"{tag}_axes"], [dst], keepdims=0))
            else:
                g.node.append(helper.make_node("ReduceMean", [src], [dst], axes=[0, 2, 3], keepdims=0))
            g.output.append(onnx.ValueInfoProto(name=dst))
            names.append(dst)
    return out, names


def _factors(fp_mean: np.ndarray, fp_sq: np.ndarray, q_mean: np.ndarray, q_sq: np.ndarray,
             active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``a`` and ``c`` of ``z' = a * z_q + c`` that give ``z_q`` FP32's mean and variance."""
    fp_var = np.maximum(fp_sq - fp_mean ** 2, 0.0)
    q_var = np.maximum(q_sq - q_mean ** 2, 0.0)
    # a (nearly) constant channel keeps its scale: its variance ratio is noise
    alive = (q_var > _MIN_VAR) & (fp_var > max(_MIN_VAR, 1e-6 * float(np.median(fp_var))))
    gain = np.where(alive, np.sqrt(fp_var / np.maximum(q_var, _MIN_VAR)), 1.0)
    gain = np.clip(gain, 1.0 / _MAX_GAIN, _MAX_GAIN)
    return gain, q_mean * (1.0 - gain) + (fp_mean - q_mean) / np.maximum(active, _MIN_ACTIVE)


def _folded(plan: QuantPlan, convs: list[_Conv], gains: dict[str, np.ndarray], shifts: dict[str, np.ndarray]) -> QuantPlan:
    """``plan`` with each conv's weight scale times its gain and its bias ``gain * b + shift``."""
    out = copy.copy(plan)
    out.tensors = dict(plan.tensors)
    out.float_biases = dict(plan.float_biases)
    for c in convs:
        gain, shift = gains[c.node], shifts[c.node]
        w = copy.copy(plan.tensors[c.weight])
        w.scale = (np.asarray(w.scale, np.float64) * gain).astype(np.float32)
        out.tensors[c.weight] = w
        if c.bias in plan.float_biases:
            out.float_biases[c.bias] = (gain * plan.float_biases[c.bias] + shift).astype(np.float32)
            continue
        b, input_scale = plan.tensors[c.bias], float(plan.tensors[c.input].scale)
        value = np.asarray(b.values, np.float64) * np.asarray(b.scale, np.float64).reshape(-1)
        moved = gain * value + shift
        # a channel whose new bias would not fit INT32 at its new scale keeps its old form
        keep = np.abs(moved) > BIAS_QMAX * input_scale * np.asarray(w.scale, np.float64)
        if keep.any():
            w.scale = np.where(keep, plan.tensors[c.weight].scale, w.scale).astype(np.float32)
            moved = np.where(keep, value, moved)
        out.tensors[c.bias] = bias_quant(c.bias, moved, input_scale, w.scale)
    return out


def _rebatch(batches: list[dict[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """The same samples in batches of ``size`` (the last one may be smaller)."""
    whole = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    count = len(next(iter(whole.values())))
    return [{k: v[i:i + size] for k, v in whole.items()} for i in range(0, count, size)]
