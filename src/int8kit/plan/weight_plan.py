"""Weights and biases of the INT8 compute nodes. Pure: the plan's input tensors and the weights in,
their quantized values out.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from int8kit.graph.ops import op_info
from int8kit.plan.bias_correction import weight_error_shift
from int8kit.plan.config import QuantConfig
from int8kit.graph.passes.linear import conv_group, conv_input_index
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.params import bias_min_weight_scale, bias_quant, weight_quant
from int8kit.plan.types import QuantPlan
from int8kit.weights.arq import MIN_CHANNEL_SCALE


def _input_mean(facts: GraphFacts, stats, node: onnx.NodeProto) -> np.ndarray | None:
    tstats = stats.tensors.get(node.input[0])
    return None if tstats is None else tstats.channel_mean


def plan_weights(facts: GraphFacts, node: onnx.NodeProto, config: QuantConfig, result: QuantPlan, stats) -> None:
    """Quantize the weights (per output channel unless ``--per-tensor``) and the INT32 bias of one
    INT8 compute node; the bias absorbs the mean shift of weight rounding (bias correction)."""
    info = op_info(node.op_type)
    w_name = node.input[info.weight_input]
    if w_name not in facts.initializers:
        return  # activation x activation MatMul: both inputs are planned as activations
    w = numpy_helper.to_array(facts.initializers[w_name]).astype(np.float32)
    axis = _weight_axis(node, w)
    per_channel = config.per_channel or config.conv_group
    if node.op_type == "ConvTranspose" and conv_group(node) > 1:
        per_channel = False  # axis-1 channels repeat across groups: one scale per tensor
    x = result.tensors.get(node.input[0])
    mean = _input_mean(facts, stats, node)
    if x is not None and x.channel_step is not None:
        # the conv reads channel c multiplied by scale / step_c: its weights take the inverse
        gain = x.channel_step.astype(np.float64) / float(x.scale)
        index = conv_input_index(w.shape, conv_group(node))
        w = (w * gain[index].reshape(index.shape + (1,) * (w.ndim - 2))).astype(np.float32)
        mean = None if mean is None else mean / gain
    has_bias = info.bias_input is not None and len(node.input) > info.bias_input and bool(node.input[info.bias_input])
    b = None
    if has_bias and x is not None:
        b_name = node.input[info.bias_input]
        b = numpy_helper.to_array(facts.initializers[b_name]).astype(np.float32).reshape(-1)
    tq = weight_quant(
        w_name,
        w,
        axis=axis if per_channel else None,
        bits=8,
        conv_group=config.conv_group,
        min_scale=bias_min_weight_scale(b, float(x.scale)) if b is not None else None,
    )
    if b is not None and tq.method == "per_channel":
        _keep_bias_of_zero_channels(tq, b, float(x.scale))
    result.tensors[w_name] = tq
    if b is not None and config.bias_correction:
        b = b - weight_error_shift(node, w, tq, mean)
    if b is not None:
        result.tensors[b_name] = bias_quant(b_name, b, float(x.scale), tq.scale)


def _keep_bias_of_zero_channels(tq, b: np.ndarray, input_scale: float) -> None:
    """A channel whose weights are all zero (pruned) is only its bias. Any scale leaves its weights
    zero, so it gets the one that makes its INT32 bias step |b| / 2**24: with the default scale
    1.0 the bias step is the input scale, and a wide input range rounded a 0.7 bias to 0."""
    codes = np.moveaxis(np.asarray(tq.values), tq.axis, 0).reshape(np.size(tq.scale), -1)
    target = (np.abs(b.astype(np.float64)) / (input_scale * 2.0**24)).astype(np.float32)
    # a bias too small for a normal float32 scale is as good as zero: keep the default scale
    zero = ~np.any(codes, axis=1) & (target >= MIN_CHANNEL_SCALE)
    if zero.any():
        scale = np.array(tq.scale, dtype=np.float32)
        scale[zero] = target[zero]
        tq.scale = scale


def _weight_axis(node: onnx.NodeProto, w: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return w.ndim - 1  # MatMul: columns of B are the output channels
