"""Phase one of planning: which nodes run in INT8 and which tensors must therefore be quantized.

Walks the op table (graph/ops.py): every op fact (weight input and rank, bias shape, fusable
activations, float outputs of matrix products) comes from there, none from op names here.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from int8kit.graph.ops import BINARY, COMPUTE, FUSABLE, SHARED, UNARY, VARIADIC, OpInfo, op_info
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.types import QuantPlan


def choose_nodes(facts: GraphFacts, forced: dict[str, str], result: QuantPlan) -> set[str]:
    """Nodes that run in INT8 (none of ``forced``); the reasons others stay float go to ``result``."""
    quantized: set[str] = set()
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role == FUSABLE or node.name in forced:
            continue
        acts = [node.input[i] for i in info.activation_inputs if i < len(node.input)]
        if info.role == COMPUTE:
            why = _compute_float_reason(facts, node, info)
            if why:
                result.float_nodes[node.name] = why
            if why is not None:
                continue
        elif info.role == BINARY:
            if not all(a in facts.activations for a in acts):
                # e.g. the attention-mask Add: one side is a constant or mask-derived tensor
                result.float_nodes[node.name] = "an input is not a calibrated activation (constant or mask)"
                continue
        elif info.role in (UNARY, SHARED):
            if node.input[0] not in facts.activations:
                continue
        elif info.role == VARIADIC:
            if not all(i in facts.activations for i in node.input if i):
                continue
        quantized.add(node.name)
    return _drop_unneeded(facts, quantized)


def _compute_float_reason(facts: GraphFacts, node: onnx.NodeProto, info: OpInfo) -> str | None:
    """Why a compute node stays float (``""``: silently, it reads no activation), or ``None``."""
    if node.input[0] not in facts.activations:
        if node.input[0] in facts.initializers and info.weight_may_be_activation:
            return "constant first operand (W @ x): INT8 MatMul takes the weight second"
        return ""
    w = node.input[info.weight_input]
    if w in facts.initializers:
        if not _weight_supported(facts, node, info):
            return "weight layout not supported for INT8"
    elif not (info.weight_may_be_activation and w in facts.activations):
        return "weight is neither a constant nor an activation"
    if not _bias_supported(facts, node, info):
        return "bias shape not supported for INT8"
    return None


def _drop_unneeded(facts: GraphFacts, quantized: set[str]) -> set[str]:
    """Keep a cheap op (Add, Concat, pooling, reshapes...) in INT8 only when a quantized consumer
    reads its output; otherwise it would only add a rounding step in front of float ops (e.g. the
    residual Add before a transformer's LayerNorm). Compute ops always stay: their speed-up is
    worth an output quantizer."""
    for node in reversed(facts.nodes):
        if node.name not in quantized or op_info(node.op_type).role == COMPUTE:
            continue
        if not any(c.name in quantized for c in consumers_through_activations(facts, node.output[0])):
            quantized.discard(node.name)
    return quantized


def consumers_through_activations(facts: GraphFacts, tensor: str) -> list[onnx.NodeProto]:
    """Consumers of ``tensor``, looking through Relu/Clip that may be fused into its producer."""
    out = []
    for cons in facts.consumers.get(tensor, []):
        info = op_info(cons.op_type)
        if info is not None and info.role == FUSABLE:
            out.extend(consumers_through_activations(facts, cons.output[0]))
        else:
            out.append(cons)
    return out


def _weight_supported(facts: GraphFacts, node: onnx.NodeProto, info: OpInfo) -> bool:
    rank = len(facts.initializers[node.input[info.weight_input]].dims)
    return rank == 2 if info.matrix else rank >= 3


def _bias_supported(facts: GraphFacts, node: onnx.NodeProto, info: OpInfo) -> bool:
    if info.bias_input is None or len(node.input) <= info.bias_input or not node.input[info.bias_input]:
        return True
    bias = facts.initializers.get(node.input[info.bias_input])
    if bias is None:
        return False
    return len(bias.dims) == 1 or (info.bias_may_be_row and len(bias.dims) == 2 and bias.dims[0] == 1)


def fusable_activation(facts: GraphFacts, tensor: str, forced: dict[str, str]) -> onnx.NodeProto | None:
    """The Relu/Clip(min=0) that alone consumes ``tensor``, if its effect can be a Q saturation."""
    consumers = facts.consumers.get(tensor, [])
    if len(consumers) != 1 or tensor in facts.graph_outputs:
        return None
    act = consumers[0]
    info = op_info(act.op_type)
    if act.name in forced or info is None or info.role != FUSABLE:
        return None
    k = info.lower_bound_input
    if k is None:
        return act
    if len(act.input) > k and act.input[k] in facts.initializers:
        lo = numpy_helper.to_array(facts.initializers[act.input[k]])
        other_bounds_constant = all(not i or i in facts.initializers for i in act.input[k + 1:])
        if lo.size == 1 and float(lo.reshape(-1)[0]) == 0.0 and other_bounds_constant:  # shape () or [1]
            return act
    return None


def tensors_to_quantize(facts: GraphFacts, quantized: set[str], forced: dict[str, str], result: QuantPlan,
                        inputs_only: bool = False) -> set[str]:
    """Tensors the INT8 nodes read or write quantized; fused activations go to ``result.fused``.

    ``inputs_only`` (OpenVINO, TensorRT): a compute op's output, or the Relu/Clip after it, is
    quantized only when a quantized op reads it; those runtimes fuse the DequantizeLinear of the
    next input into its conv and need no QuantizeLinear on a conv output that a float op reads."""
    need: set[str] = set()
    for node in facts.nodes:
        if node.name not in quantized:
            continue
        info = op_info(node.op_type)
        if info.role == COMPUTE:
            need.add(node.input[0])
            if info.weight_may_be_activation and node.input[info.weight_input] in facts.activations:
                need.add(node.input[info.weight_input])
        elif info.role == BINARY:
            need.update(node.input[:2])
        elif info.role == VARIADIC:
            need.update(i for i in node.input if i)
        elif info.role == UNARY:
            need.add(node.input[0])
        if info.role in (COMPUTE, BINARY, VARIADIC, UNARY):
            out = node.output[0]
            act = fusable_activation(facts, out, forced) if info.role in (COMPUTE, BINARY) else None
            if act is not None:
                result.fused[act.name] = out
                if not (inputs_only and info.role == COMPUTE) or _read_quantized(facts, act.output[0], quantized):
                    need.add(act.output[0])
            elif info.role != COMPUTE or _output_needed(facts, node, info, quantized, inputs_only):
                need.add(out)
    # Scale-sharing ops pass the need backwards: if a Reshape's output is needed, so is its input.
    for node in reversed(facts.nodes):
        if node.name in quantized and op_info(node.op_type).role == SHARED:
            if any(o in need for o in node.output):
                need.add(node.input[0])
    return need


def _read_quantized(facts: GraphFacts, tensor: str, quantized: set[str]) -> bool:
    return any(c.name in quantized for c in facts.consumers.get(tensor, []))


def _output_needed(facts: GraphFacts, node: onnx.NodeProto, info: OpInfo, quantized: set[str],
                   inputs_only: bool = False) -> bool:
    """Whether a quantized compute op's output gets a QuantizeLinear.

    Conv needs one to run as QLinearConv, even when it writes a model output (a detection head:
    without it onnxruntime runs the conv in float on dequantized weights). MatMul and Gemm run as
    MatMulIntegerToFloat / QGemm with a float output, so they quantize their output only for a
    quantized reader: a float reader then gets full precision (the FFN output of BERT-like
    encoders holds outliers 60x beyond its 99.99th percentile that any INT8 range would destroy),
    and so does the model's output.
    """
    if info.matrix or inputs_only:
        return any(c.name in quantized for c in consumers_through_activations(facts, node.output[0]))
    return True


def shared_sources(facts: GraphFacts, quantized: set[str], need: set[str]) -> dict[str, str]:
    """Outputs of scale-sharing ops, mapped to the tensor whose parameters they reuse."""
    out: dict[str, str] = {}
    for node in facts.nodes:
        if node.name in quantized and op_info(node.op_type).role == SHARED:
            for o in node.output:
                if o in need:
                    out[o] = node.input[0]
    return out
