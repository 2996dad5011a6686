"""BN update (AMCT ``update_bn``): after weight quantization, re-normalize every quantized conv's
output to the per-channel mean and variance FP32 gives it, measured on calibration batches that
flow through the quantized model; the correction folds into the conv's scales and bias.

Clustering (SNQ) moves a channel's weights enough to shift and scale its output, and the next
BatchNorm, still normalizing with the FP32 statistics, passes the error on. AMCT runs the
quantized network with BatchNorm in training mode for ``bn_update_iterations`` batches, keeps a
moving average of each BN's batch statistics (``bn_moving_average_fraction`` the weight of the
old value), then folds the BNs. int8kit's optimizer has already folded every BN into its conv
(graph/passes/fold_bn.py), so the conv output is what the BN used to see, scaled:
``z = gamma * (y - mu) / s + beta``. Re-estimating ``mu`` and ``s`` on the quantized ``y`` and
re-folding equals ``z' = a * z_q + c`` per channel with ``a = std(z_fp) / std(z_q)`` and
``c = mean(z_fp) - a * mean(z_q)``, where AMCT's target is (beta, gamma), the statistics FP32's
``z`` has when the BN's statistics match the data. int8kit takes FP32's own statistics of ``z``
on the same batches as the target instead: it needs no BN parameters (they are gone after
folding), covers convs that never had a BN, and leaves an unquantized model exactly as it was
(AMCT's target would move even FP32 towards the calibration set's statistics).

The update folds exactly into the quantized form: ``a`` multiplies the channel's weight scale
(the INT8 codes, and so SNQ's 16 levels, stay) and ``c`` joins the bias, which is quantized again
to INT32 at the new scale. As in AMCT all convs update together, each iteration running one batch
through the model corrected so far, so a correction upstream is seen downstream within a few
iterations; the moving average forgets the statistics measured before it.
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
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from int8kit.calib.taps import default_opset
from int8kit.data.sources import model_input_specs
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import DataError
from int8kit.graph.io import write_bytes_atomic
from int8kit.plan.params import bias_quant
from int8kit.plan.types import QuantPlan
from int8kit.runtime.session import make_session

BN_BATCH = 8  # samples per update iteration (models with a free batch dimension)
# A channel's scale factor is kept in [1/2, 2]: the update corrects quantization error, and a
# larger factor means its statistics are unreliable (a nearly constant channel).
_MAX_GAIN = 2.0
_MIN_VAR = 1e-12


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
              fraction: float = 0.5, progress: bool = True) -> tuple[QuantPlan, BnUpdate]:
    """Return a copy of ``plan`` whose per-channel quantized convs are re-normalized to FP32's
    output statistics (see the module docstring), and what changed. ``batches`` are model feeds
    (calibration samples), used in turn for ``iterations`` batches."""
    convs = _targets(fp32, plan)
    if not convs:
        return plan, BnUpdate(0, {}, {}, {}, {})
    if not batches:
        raise DataError("--update-bn runs the quantized model on calibration samples, but none were kept; pass --data.")
    if all(spec.batch_dim is None for spec in model_input_specs(fp32)):
        batches = _rebatch(batches, BN_BATCH)
    reference, names = _probed(fp32, convs, corrected=False)
    quantized, qnames = _probed(emit_qdq(fp32, plan), convs, corrected=True)
    ref_session, q_session = make_session(reference, reduce_early=True), make_session(quantized, reduce_early=True)
    ref_cache: dict[int, list[np.ndarray]] = {}
    gains = {c.node: np.ones(c.channels) for c in convs}
    shifts = {c.node: np.zeros(c.channels) for c in convs}
    run_fp: list[np.ndarray] | None = None
    run_q: list[np.ndarray] | None = None
    for it in tqdm(range(iterations), desc="BN update", unit="batch", file=sys.stderr, disable=not progress, leave=False):
        k = it % len(batches)
        if k not in ref_cache:  # FP32 does not change: each batch runs once
            ref_cache[k] = [np.asarray(v, np.float64) for v in ref_session.run(names, batches[k])]
        feeds = dict(batches[k])
        for c in convs:
            feeds[f"{c.node}/bn_gain"] = gains[c.node].astype(np.float32).reshape(1, -1, 1, 1)
            feeds[f"{c.node}/bn_shift"] = shifts[c.node].astype(np.float32).reshape(1, -1, 1, 1)
        measured = [np.asarray(v, np.float64) for v in q_session.run(qnames, feeds)]
        run_fp = _average(run_fp, ref_cache[k], fraction)
        run_q = _average(run_q, measured, fraction)
        for j, c in enumerate(convs):
            gains[c.node], shifts[c.node] = _factors(run_fp[2 * j], run_fp[2 * j + 1], run_q[2 * j], run_q[2 * j + 1])
    report = BnUpdate(len(convs), gains, shifts,
                      {c.node: _moments(run_fp, j) for j, c in enumerate(convs)},
                      {c.node: _moments(run_q, j) for j, c in enumerate(convs)})
    return _folded(plan, convs, gains, shifts), report


def _targets(fp32: onnx.ModelProto, plan: QuantPlan) -> list[_Conv]:
    """Convs with per-channel quantized weights and a bias (every BN-folded conv has one)."""
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


def _probed(model: onnx.ModelProto, convs: list[_Conv], *, corrected: bool) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` that outputs, per conv, the per-channel mean of its output and of the
    output's square over one batch. ``corrected``: the conv's output also passes through
    ``* gain + shift`` (two float inputs of shape 1 x C x 1 x 1) before its readers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, opset = out.graph, default_opset(out)
    by_name = {n.name: n for n in g.node}
    names: list[str] = []
    extra: list[onnx.NodeProto] = []
    for c in convs:
        node = by_name[c.node]
        y = node.output[0]
        tag = f"{c.node}/bn"
        if corrected:
            raw = f"{tag}_raw"
            node.output[0] = raw
            g.input.extend(helper.make_tensor_value_info(f"{c.node}/bn_{k}", TensorProto.FLOAT, [1, c.channels, 1, 1])
                           for k in ("gain", "shift"))
            extra += [helper.make_node("Mul", [raw, f"{c.node}/bn_gain"], [f"{tag}_scaled"]),
                      helper.make_node("Add", [f"{tag}_scaled", f"{c.node}/bn_shift"], [y])]
            y = raw
        extra.append(helper.make_node("Mul", [y, y], [f"{tag}_square"]))
        for src, dst in ((y, f"{tag}_mean"), (f"{tag}_square", f"{tag}_meansq")):
            if opset >= 18:
                extra.append(helper.make_node("ReduceMean", [src, f"{tag}_axes"], [dst], keepdims=0))
            else:
                extra.append(helper.make_node("ReduceMean", [src], [dst], axes=[0, 2, 3], keepdims=0))
            g.output.append(onnx.ValueInfoProto(name=dst))
            names.append(dst)
        if opset >= 18:
            g.initializer.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), f"{tag}_axes"))
    # the probes go right after their conv's consumers are defined: append, then order
    nodes = _ordered(list(g.node) + extra, {i.name for i in g.input} | {t.name for t in g.initializer})
    del g.node[:]
    g.node.extend(nodes)
    return out, names


def _ordered(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each one's inputs are produced before it (stable otherwise)."""
    done, out, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in done for i in n.input):
                out.append(n)
                done.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # inputs from outer scopes or unknown: keep the given order
            return out + rest
        pending = rest
    return out


def _average(running: list[np.ndarray] | None, batch: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Caffe's moving average: ``fraction`` of the old value plus the rest of the new one."""
    if running is None:
        return list(batch)
    return [fraction * r + (1.0 - fraction) * b for r, b in zip(running, batch)]


def _moments(running: list[np.ndarray], j: int) -> tuple[np.ndarray, np.ndarray]:
    mean = running[2 * j]
    return mean, np.maximum(running[2 * j + 1] - mean * mean, 0.0)


def _factors(fp_mean: np.ndarray, fp_sq: np.ndarray, q_mean: np.ndarray, q_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``a`` and ``c`` of ``z' = a * z_q + c`` that give ``z_q`` FP32's mean and variance."""
    fp_var = np.maximum(fp_sq - fp_mean ** 2, 0.0)
    q_var = np.maximum(q_sq - q_mean ** 2, 0.0)
    gain = np.where((q_var > _MIN_VAR) & (fp_var > _MIN_VAR), np.sqrt(fp_var / np.maximum(q_var, _MIN_VAR)), 1.0)
    gain = np.clip(gain, 1.0 / _MAX_GAIN, _MAX_GAIN)
    return gain, fp_mean - gain * q_mean


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
        b = plan.tensors[c.bias]
        value = np.asarray(b.values, np.float64) * np.asarray(b.scale, np.float64).reshape(-1)
        out.tensors[c.bias] = bias_quant(c.bias, gain * value + shift, float(plan.tensors[c.input].scale), w.scale)
    return out


def _rebatch(batches: list[dict[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """The same samples in batches of ``size`` (the last one may be smaller)."""
    whole = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    count = len(next(iter(whole.values())))
    return [{k: v[i:i + size] for k, v in whole.items()} for i in range(0, count, size)]
