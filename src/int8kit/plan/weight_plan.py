"""Weights and biases of the INT8 compute nodes. Pure: the plan's input tensors and the weights in,
their quantized values out; memoized per layer in the plan context (plan/context.py).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx

from int8kit.config import QuantConfig
from int8kit.graph.ops import OpInfo, op_info
from int8kit.graph.passes.linear import conv_group, conv_input_index
from int8kit.plan.bias_correction import weight_error_shift
from int8kit.plan.context import PlanContext
from int8kit.plan.memo import frozen, read_only
from int8kit.plan.params import bias_min_weight_scale, bias_quant, weight_quant
from int8kit.plan.types import QuantPlan, TensorQuant
from int8kit.weights.arq import MIN_CHANNEL_SCALE
from int8kit.weights.snq import cluster_codes


def snq_layers(ctx: PlanContext, nodes: list[onnx.NodeProto], config: QuantConfig) -> set[str]:
    """The INT8 compute nodes (in graph order) whose weights SNQ clusters to 16 levels a channel:
    every one with constant weights under ``--weight-algo snq`` except the first and the last
    (uniform INT8, the AMCT manual's advice, unless ``--snq-all-layers``); a layer's override
    ``weight_algo`` decides for that layer."""
    weighted = [n.name for n in nodes if n.input[op_info(n.op_type).weight_input] in ctx.facts.initializers]
    chosen = set(weighted) if config.weight_algo == "snq" else set()
    if chosen and config.snq_keep_ends:
        chosen -= {weighted[0], weighted[-1]}
    for name in weighted:
        ov = config.overrides.get(name)
        if ov is not None and ov.weight_algo is not None:
            (chosen.add if ov.weight_algo == "snq" else chosen.discard)(name)
    return chosen


def plan_weights(ctx: PlanContext, node: onnx.NodeProto, config: QuantConfig, result: QuantPlan, *,
                 snq: bool = False) -> None:
    """Quantize the weights (per output channel unless ``--per-tensor``) and the INT32 bias of one
    INT8 compute node; the bias absorbs the mean shift of weight rounding (bias correction).
    ``snq``: the INT8 weight codes are then clustered to 16 levels per channel (weights/snq.py).

    The result depends on the configuration only through the granularity, conv groups, bias
    correction and the input's scale and channel steps: those key the memo."""
    info = op_info(node.op_type)
    if node.input[info.weight_input] not in ctx.facts.initializers:
        return  # activation x activation MatMul: both inputs are planned as activations
    per_channel = config.per_channel or config.conv_group
    ov = config.overrides.get(node.name)
    if ov is not None and ov.per_channel is not None:  # AMCT's per-layer channel_wise
        per_channel = ov.per_channel or config.conv_group
    if info.per_tensor_if_grouped and conv_group(node) > 1:
        per_channel = False  # the channel axis repeats across groups: one scale per tensor
    x = result.tensors.get(node.input[0])
    x_key = None if x is None else (float(x.scale), frozen(x.channel_step))
    snq_key = (config.snq_init, config.snq_iterations, config.snq_min_distance) if snq else None
    key = (node.name, per_channel, config.conv_group, config.bias_correction, config.inputs_only, x_key, snq_key)
    planned, float_biases = ctx.weights.get(key, lambda: _quantize_layer(ctx, node, info, x, per_channel, config, snq))
    for tq in planned:
        result.tensors[tq.name] = copy.copy(tq)  # a plan owns its entries; the arrays are read-only
    result.float_biases.update(float_biases)


def _quantize_layer(ctx: PlanContext, node: onnx.NodeProto, info: OpInfo, x: TensorQuant | None, per_channel: bool,
                    config: QuantConfig, snq: bool = False) -> tuple[tuple[TensorQuant, ...], dict[str, np.ndarray]]:
    """The layer's quantized weight and INT32 bias, or its weight and corrected float bias
    (``config.inputs_only``: OpenVINO, TensorRT), by bias name."""
    w_name = node.input[info.weight_input]
    w = ctx.weight_array(w_name)
    axis = info.channel_axis(node, w.ndim)
    tstats = ctx.stats.tensors.get(node.input[0])
    mean = None if tstats is None else tstats.channel_mean
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
        b = ctx.weight_array(b_name).reshape(-1)
    tq = weight_quant(
        w_name,
        w,
        axis=axis if per_channel else None,
        bits=8,
        conv_group=config.conv_group,
        # an INT32 bias limits how fine the weight steps may be; a float bias does not
        min_scale=bias_min_weight_scale(b, float(x.scale)) if b is not None and not config.inputs_only else None,
    )
    if b is not None and tq.method == "per_channel" and not config.inputs_only:
        _keep_bias_of_zero_channels(tq, b, float(x.scale))
    if snq:  # the bias correction below also absorbs the mean shift of clustering
        tq.values = cluster_codes(tq.values, tq.axis, init=config.snq_init, max_iteration=config.snq_iterations,
                                  min_distance=config.snq_min_distance)
        tq.method = "snq"
    planned = [tq]
    if b is not None and config.bias_correction:
        b = b - weight_error_shift(node, w, tq, mean)
    float_biases = {}
    if b is not None and config.inputs_only:
        float_biases[b_name] = read_only(b.astype(np.float32))
    elif b is not None:
        planned.append(bias_quant(b_name, b, float(x.scale), tq.scale))
    for t in planned:
        t.scale, t.zero_point, t.values = read_only(t.scale), read_only(t.zero_point), read_only(t.values)
    return tuple(planned), float_biases


def _keep_bias_of_zero_channels(tq: TensorQuant, b: np.ndarray, input_scale: float) -> None:
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
