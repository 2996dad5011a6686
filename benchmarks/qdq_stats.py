"""What a quantized ONNX model really runs in INT8: compute layers fed by DequantizeLinear, and their MACs.

Any tool's output is read the same way (int8kit, NNCF, Intel Neural Compressor, onnxruntime): a
compute node (Conv, ConvTranspose, MatMul, Gemm) counts as INT8 when both its data and its weight
input come out of a DequantizeLinear (and, for a Conv, its output goes to one QuantizeLinear alone:
``int8kit.analysis.ort_fusion``), or when it is already an integer operator (QLinearConv, ...).
Every other compute node runs in float (onnxruntime fuses Q/DQ only around the node itself: a
DequantizeLinear -> Pad -> Conv runs the Conv in float). MACs are counted at batch 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from int8kit.analysis.ort_fusion import convs_run_in_float

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm")


@dataclass(frozen=True)
class Int8Share:
    """Compute layers of one model: how many, how many float, and the MACs that run in INT8."""

    layers: int
    float_layers: int
    macs: int
    int8_macs: int

    @property
    def int8_mac_fraction(self) -> float:
        return self.int8_macs / self.macs if self.macs else 0.0


def _shapes(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Shapes of every compute node's inputs and output, from one onnxruntime run on ``feed``.

    Shape inference cannot see through the computed pads of exported models (EfficientNet-Lite's
    static padding), so the shapes come from running the model once.
    """
    import onnxruntime as ort

    g = model.graph
    names = {name for n in g.node if n.op_type in COMPUTE_OPS + INTEGER_OPS for name in (*n.input[:4], n.output[0])}
    inits = {init.name: list(init.dims) for init in g.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - known - set(inits)) if n)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {k: v[:1] for k, v in feed.items()})
    shapes = {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs)}
    return {**shapes, **inits}


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one compute node at batch 1 (0 when shapes are unknown)."""
    out = shapes.get(node.output[0])
    if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
        w = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        return math.prod(out[1:]) * math.prod(w[1:]) if out and w else 0
    if node.op_type == "ConvTranspose":
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        return math.prod(x[1:]) * math.prod(w[1:]) if x and w else 0
    a = shapes.get(node.input[0])
    if node.op_type == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if a and trans_a else (a[-1] if a else 0)
        return math.prod(out) * k if out else 0
    return math.prod(out) * a[-1] if out and a else 0  # MatMul family: every output is a dot of length K


def int8_share(path: str | Path | onnx.ModelProto, feed: dict[str, np.ndarray]) -> Int8Share:
    """Count the compute layers of ``path`` and which of them (and of their MACs, at batch 1 on
    the first sample of ``feed``) run in INT8."""
    model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    unfused = set(convs_run_in_float(model))  # DQ-fed convs whose output is not read by one Q alone
    shapes = _shapes(model, feed)
    layers = floats = macs = int8_macs = 0
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS + INTEGER_OPS:
            continue
        layers += 1
        cost = _macs(node, shapes)
        macs += cost
        int8 = node.op_type in INTEGER_OPS or (node.name not in unfused and all(
            producers.get(name) == "DequantizeLinear" for name in node.input[:2]))
        if int8:
            int8_macs += cost
        else:
            floats += 1
    return Int8Share(layers, floats, macs, int8_macs)


def ort_int8_compute(path: str | Path) -> int:
    """Integer compute kernels (QLinearConv, QLinearMatMul, ...) in onnxruntime's optimized graph of
    ``path``: what really runs in INT8 on the CPU, where Q/DQ pairs fuse only in known patterns
    (a Conv whose output goes to a BatchNormalization instead of a QuantizeLinear stays float)."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    return sum(op in INTEGER_OPS or op == "MatMulIntegerToFloat" for op in ops)
