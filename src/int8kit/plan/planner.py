"""plan(): statistics + weights + config → QuantPlan. Pure: no I/O, no inference session.

Two phases, as in the best QDQ quantizers: first decide which nodes run in INT8 and which tensors
must therefore be quantized (walking the op table), then compute each tensor's parameters
(activation ranges from the threshold methods, weights and biases quantized here).
"""

from __future__ import annotations

import logging

import onnx
from onnx import numpy_helper

from int8kit.errors import CalibrationError
from int8kit.graph.ops import BINARY, COMPUTE, FUSABLE, SHARED, UNARY, VARIADIC, op_info
from int8kit.plan.advice import warn_narrow_concat_inputs
from int8kit.plan.config import LayerOverride, QuantConfig
from int8kit.plan.domains import value_domain
from int8kit.plan.graph_facts import GraphFacts, float_nodes
from int8kit.plan.override_check import check_overrides_apply
from int8kit.plan.channel_scales import assign_channel_steps
from int8kit.plan.integer_ops import drop_inner_tensors, integer_hardswish
from int8kit.plan.method_rules import override_method, rule_choice
from int8kit.plan.params import activation_quant
from int8kit.plan.weight_plan import plan_weights
from int8kit.plan.types import QuantPlan
from int8kit.thresholds import Target, compute_range

log = logging.getLogger(__name__)



def candidate_tensors(model: onnx.ModelProto) -> list[str]:
    """Every tensor that some configuration could quantize: calibration taps exactly these,
    so one pass serves every later re-plan (automatic search, overrides).

    Mixed-precision options only ever remove nodes from INT8, so the nodes chosen with no option
    set cover every configuration. Tensors no rule would quantize are not tapped at all (e.g. an
    attention-mask Add whose output holds -inf), nor are the outputs of Conv/Add that only feed a
    Relu/Clip fused into them (a third of all values on EfficientNet): should that Relu be kept
    float, the op before it stays float too (see _uncalibrated_producers).
    """
    facts = GraphFacts.of(model)
    quantized = _choose_nodes(facts, {}, QuantPlan())
    wanted: dict[str, None] = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None:
            continue
        if node.name in quantized:
            names = list(node.input[:1]) if info.role == SHARED else _activation_inputs(node, info)
            names += [o for o in node.output if info.role not in (COMPUTE, BINARY) or _fusable_activation(facts, o, {}) is None]
        elif info.role == FUSABLE and facts.producer.get(node.input[0]) is not None and facts.producer[node.input[0]].name in quantized:
            names = list(node.output)
        else:
            continue
        wanted.update((n, None) for n in names if n and n in facts.activations)
    return list(wanted)


def _activation_inputs(node: onnx.NodeProto, info) -> list[str]:
    if info.role == VARIADIC:
        return [i for i in node.input if i]
    return [node.input[i] for i in info.activation_inputs if i < len(node.input) and node.input[i]]


def plan(model: onnx.ModelProto, stats, config: QuantConfig) -> QuantPlan:
    """Decide, for every tensor, how it is quantized (or that it stays float)."""
    facts = GraphFacts.of(model)
    result = QuantPlan(signed_storage=config.signed_activations,
                       keep_activation_nodes=config.signed_activations or 8 < config.bitwidth < 16)
    user_float = float_nodes(facts, config)
    forced_float = dict(user_float)
    forced_float.update(_outlier_inputs(facts, stats, config))
    forced_float.update(_uncalibrated_producers(facts, stats, forced_float))
    result.float_nodes.update(forced_float)

    quantized = _choose_nodes(facts, forced_float, result)
    need = _tensors_to_quantize(facts, quantized, forced_float, result)
    shared_src = _shared_sources(facts, quantized, need)

    # Activation parameters: own statistics, or the source tensor's for scale-sharing ops.
    near_input = _float_input_region(facts, quantized)
    for name in _topological_tensors(facts, need):
        if name in shared_src:
            continue
        result.tensors[name] = _activation(facts, stats, config, name, name in near_input)
    for name, src in shared_src.items():
        root = src
        while root in shared_src:
            root = shared_src[root]
        if root in result.tensors:
            tq = result.tensors[root]
            result.tensors[name] = type(tq)(**{**tq.__dict__, "name": name})
    if config.fold_concat_scale:
        _fold_concat(facts, quantized, result)
    integer = integer_hardswish(facts, result, set(user_float)) if config.integer_hardswish else {}
    if config.channel_scales and not config.signed_activations:
        assign_channel_steps(facts, stats, quantized, result, frozenset(f.nodes[-1] for f in integer.values()))
    result.integer_hardswish = {y: f for y, f in integer.items() if result.tensors[y].channel_step is None}
    drop_inner_tensors(facts, result)
    check_overrides_apply(facts, config, result)
    warn_narrow_concat_inputs(facts, result)

    # Weights and biases of compute nodes.
    for node in facts.nodes:
        if node.name not in quantized or op_info(node.op_type).role != COMPUTE:
            continue
        plan_weights(facts, node, config, result, stats)
    return result


def _uncalibrated_producers(facts: GraphFacts, stats, forced: dict[str, str]) -> dict[str, str]:
    """Conv/Add whose output has no statistics and cannot be fused with the Relu/Clip after it
    (because that one is kept float): they stay float instead of guessing a range."""
    out: dict[str, str] = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role not in (COMPUTE, BINARY) or node.name in forced or not node.output:
            continue
        tensor = node.output[0]
        skipped_by_calibration = _fusable_activation(facts, tensor, {}) is not None
        if skipped_by_calibration and tensor not in stats.tensors and _fusable_activation(facts, tensor, forced) is None:
            out[node.name] = "its output was not calibrated (the Relu/Clip after it is kept float)"
    return out


def _outlier_inputs(facts: GraphFacts, stats, config: QuantConfig) -> dict[str, str]:
    """MatMul/Gemm whose activation input holds extreme outliers stay float.

    One per-tensor INT8 scale cannot hold both the bulk and outliers many times beyond it: the
    FFN down-projection input of BERT-like encoders has a max 5-7x its 99.99th percentile, and
    either clipping or covering those outliers costs far more accuracy than the layer's
    speed-up is worth. ``outlier_ratio`` (0 disables) sets the limit.
    """
    out: dict[str, str] = {}
    if not config.outlier_ratio:
        return out
    for node in facts.nodes:
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] not in stats.tensors:
            continue
        hist = stats.tensors[node.input[0]].hist
        lo, hi = compute_range("percentile", hist, Target(), percentile=99.99)
        bulk = max(abs(lo), abs(hi))
        if bulk > 0 and hist.absmax > config.outlier_ratio * bulk:
            out[node.name] = f"input outliers: max {hist.absmax:.3g} > {config.outlier_ratio:g} x 99.99th percentile {bulk:.3g}"
    return out


def _choose_nodes(facts: GraphFacts, forced: dict[str, str], result: QuantPlan) -> set[str]:
    quantized: set[str] = set()
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role == FUSABLE or node.name in forced:
            continue
        acts = [node.input[i] for i in info.activation_inputs if i < len(node.input)]
        if info.role == COMPUTE:
            if node.input[0] not in facts.activations:
                if node.input[0] in facts.initializers and node.op_type == "MatMul":
                    result.float_nodes[node.name] = "constant first operand (W @ x): INT8 MatMul takes the weight second"
                continue
            w = node.input[info.weight_input]
            if w in facts.initializers:
                if not _weight_supported(facts, node):
                    result.float_nodes[node.name] = "weight layout not supported for INT8"
                    continue
            elif not (node.op_type == "MatMul" and w in facts.activations):
                result.float_nodes[node.name] = "weight is neither a constant nor an activation"
                continue
            if not _bias_supported(facts, node):
                result.float_nodes[node.name] = "bias shape not supported for INT8"
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


def _drop_unneeded(facts: GraphFacts, quantized: set[str]) -> set[str]:
    """Keep a cheap op (Add, Concat, pooling, reshapes...) in INT8 only when a quantized consumer
    reads its output; otherwise it would only add a rounding step in front of float ops (e.g. the
    residual Add before a transformer's LayerNorm). Compute ops always stay: their speed-up is
    worth an output quantizer."""
    for node in reversed(facts.nodes):
        if node.name not in quantized or op_info(node.op_type).role == COMPUTE:
            continue
        if not any(c.name in quantized for c in _consumers_through_activations(facts, node.output[0])):
            quantized.discard(node.name)
    return quantized


def _consumers_through_activations(facts: GraphFacts, tensor: str) -> list[onnx.NodeProto]:
    """Consumers of ``tensor``, looking through Relu/Clip that may be fused into its producer."""
    out = []
    for cons in facts.consumers.get(tensor, []):
        info = op_info(cons.op_type)
        if info is not None and info.role == FUSABLE:
            out.extend(_consumers_through_activations(facts, cons.output[0]))
        else:
            out.append(cons)
    return out


def _weight_supported(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    w = facts.initializers[node.input[op_info(node.op_type).weight_input]]
    if node.op_type == "MatMul":
        return len(w.dims) == 2
    if node.op_type == "Gemm":
        return len(w.dims) == 2
    return len(w.dims) >= 3


def _bias_supported(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    info = op_info(node.op_type)
    if info.bias_input is None or len(node.input) <= info.bias_input or not node.input[info.bias_input]:
        return True
    bias = facts.initializers.get(node.input[info.bias_input])
    if bias is None:
        return False
    if node.op_type == "Gemm":
        return len(bias.dims) == 1 or (len(bias.dims) == 2 and bias.dims[0] == 1)
    return len(bias.dims) == 1


def _fusable_activation(facts: GraphFacts, tensor: str, forced: dict[str, str]) -> onnx.NodeProto | None:
    """The Relu/Clip(min=0) that alone consumes ``tensor``, if its effect can be a Q saturation."""
    consumers = facts.consumers.get(tensor, [])
    if len(consumers) != 1 or tensor in facts.graph_outputs:
        return None
    act = consumers[0]
    if act.name in forced:
        return None
    if act.op_type == "Relu":
        return act
    if act.op_type == "Clip" and len(act.input) > 1 and act.input[1] in facts.initializers:
        lo = numpy_helper.to_array(facts.initializers[act.input[1]])
        hi_ok = len(act.input) < 3 or not act.input[2] or act.input[2] in facts.initializers
        if lo.size == 1 and float(lo.reshape(-1)[0]) == 0.0 and hi_ok:  # shape () or [1]
            return act
    return None


def _tensors_to_quantize(facts: GraphFacts, quantized: set[str], forced: dict[str, str], result: QuantPlan) -> set[str]:
    need: set[str] = set()
    for node in facts.nodes:
        if node.name not in quantized:
            continue
        info = op_info(node.op_type)
        if info.role == COMPUTE:
            need.add(node.input[0])
            if node.op_type == "MatMul" and node.input[1] in facts.activations:
                need.add(node.input[1])
        elif info.role == BINARY:
            need.update(node.input[:2])
        elif info.role == VARIADIC:
            need.update(i for i in node.input if i)
        elif info.role == UNARY:
            need.add(node.input[0])
        if info.role in (COMPUTE, BINARY, VARIADIC, UNARY):
            out = node.output[0]
            act = _fusable_activation(facts, out, forced) if info.role in (COMPUTE, BINARY) else None
            if act is not None:
                result.fused[act.name] = out
                need.add(act.output[0])
            elif info.role != COMPUTE or _output_needed(facts, node, quantized):
                need.add(out)
    # Scale-sharing ops pass the need backwards: if a Reshape's output is needed, so is its input.
    for node in reversed(facts.nodes):
        if node.name in quantized and op_info(node.op_type).role == SHARED:
            if any(o in need for o in node.output):
                need.add(node.input[0])
    return need


def _output_needed(facts: GraphFacts, node: onnx.NodeProto, quantized: set[str]) -> bool:
    """Whether a quantized compute op's output gets a QuantizeLinear.

    Conv needs one to run as QLinearConv, even when it writes a model output (a detection head:
    without it onnxruntime runs the conv in float on dequantized weights). MatMul and Gemm run as
    MatMulIntegerToFloat / QGemm with a float output, so they quantize their output only for a
    quantized reader: a float reader then gets full precision (the FFN output of BERT-like
    encoders holds outliers 60x beyond its 99.99th percentile that any INT8 range would destroy),
    and so does the model's output.
    """
    out = node.output[0]
    if node.op_type in ("MatMul", "Gemm"):
        return any(c.name in quantized for c in _consumers_through_activations(facts, out))
    return True


def _shared_sources(facts, quantized, need) -> dict[str, str]:
    """Outputs of scale-sharing ops, mapped to the tensor whose parameters they reuse."""
    out: dict[str, str] = {}
    for node in facts.nodes:
        if node.name in quantized and op_info(node.op_type).role == SHARED:
            for o in node.output:
                if o in need:
                    out[o] = node.input[0]
    return out


def _topological_tensors(facts: GraphFacts, names: set[str]) -> list[str]:
    order = [n for n in facts.graph_inputs if n in names]
    for node in facts.nodes:
        order.extend(o for o in node.output if o in names)
    return order


def _override_for(facts: GraphFacts, config: QuantConfig, tensor: str) -> LayerOverride | None:
    ov = config.overrides.get(tensor)
    if ov is None:
        producer = facts.producer.get(tensor)
        if producer is not None:
            ov = config.overrides.get(producer.name)
    return ov


def _float_input_region(facts: GraphFacts, quantized: set[str]) -> set[str]:
    """Model inputs and the tensors computed from them by float nodes only (the float stem,
    --fp-inputs pre-processing): where the first INT8 layers read the features nearest the input."""
    region = set(facts.graph_inputs)
    for node in facts.nodes:
        if node.name in quantized:
            continue
        sources = [i for i in node.input if i and i not in facts.initializers]
        if sources and all(i in region for i in sources):
            region.update(o for o in node.output if o)
    return region


def _activation(facts: GraphFacts, stats, config: QuantConfig, name: str, near_input: bool = False):
    tstats = stats.tensors.get(name)
    if tstats is None:
        raise CalibrationError(
            f"the statistics have no entry for tensor '{name}'; expected statistics collected on this "
            "model (re-run 'int8kit calibrate' on the same model, or quantize with --data)."
        )
    ov = _override_for(facts, config, name)
    producer = facts.producer.get(name)
    signed = config.signed_activations
    symmetric = signed or (not config.activation_offset and not _skewed(tstats.hist, config.skew_ratio))
    method, params = config.th_method, dict(config.th_params)
    if config.method_rules:
        method, params, symmetric = rule_choice(tstats.hist, producer, method, params, symmetric, signed, near_input)
    if ov is not None and ov.th_method:
        method, params = override_method(ov, config)
    return activation_quant(
        name,
        tstats.hist,
        method=method,
        params=params,
        bits=config.bitwidth,
        symmetric=symmetric,
        th_scale=ov.th_scale if ov else 1.0,
        # TensorRT's symmetric int8 cannot start a range at -3
        domain=None if signed else value_domain(facts, name),
        threshold=ov.threshold if ov else None,
        signed=signed,
    )


def _skewed(hist, ratio: float) -> bool:
    """A mostly one-sided signed tensor (LayerNorm or GELU/Swish outputs): a symmetric range would
    waste most of the negative codes, so it gets a zero point (uint8) instead."""
    if not ratio or hist.min >= 0 or hist.max <= 0:
        return False
    small, large = sorted((-hist.min, hist.max))
    return small < ratio * large


def _fold_concat(facts: GraphFacts, quantized: set[str], result: QuantPlan) -> None:
    """--fold-concat-scale: give each Concat input the Concat output's scale, so the Concat
    is a plain copy; only for inputs that nothing else reads."""
    for node in facts.nodes:
        if node.name not in quantized or node.op_type != "Concat":
            continue
        out = result.tensors.get(node.output[0])
        if out is None:
            continue
        for inp in node.input:
            if inp in result.tensors and len(facts.consumers.get(inp, [])) == 1 and inp not in facts.graph_inputs:
                result.tensors[inp] = type(out)(**{**out.__dict__, "name": inp})
