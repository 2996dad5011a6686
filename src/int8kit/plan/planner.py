"""plan(): statistics + weights + config → QuantPlan. Pure: no I/O, no inference session.

Two phases, as in the best QDQ quantizers: first decide which nodes run in INT8 and which tensors
must therefore be quantized (walking the op table, plan/node_choice.py), then compute each
tensor's parameters (activation ranges from the threshold methods, weights and biases quantized
here). Re-planning the same model from the same statistics is cheap: the graph facts, threshold
searches and quantized weights are kept between calls (plan/context.py), keyed on everything
they depend on, so a new configuration gives exactly the plan a fresh planner would.
"""

from __future__ import annotations

import logging

import onnx

from int8kit.calib.stats import Stats
from int8kit.config import LayerOverride, QuantConfig
from int8kit.errors import CalibrationError
from int8kit.graph.ops import BINARY, COMPUTE, FUSABLE, SHARED, VARIADIC, op_info
from int8kit.plan.advice import warn_narrow_concat_inputs
from int8kit.plan.channel_scales import assign_channel_steps
from int8kit.plan.context import PlanContext, context_for
from int8kit.plan.domains import value_domain
from int8kit.plan.graph_facts import GraphFacts, float_nodes
from int8kit.plan.integer_ops import drop_inner_tensors, integer_hardswish
from int8kit.plan.method_choice import choose, guard_divergence
from int8kit.plan.method_rules import auto_candidates, override_method, rule_choice
from int8kit.plan.node_choice import choose_nodes, fusable_activation, shared_sources, tensors_to_quantize
from int8kit.plan.override_check import check_overrides_apply
from int8kit.plan.params import activation_quant
from int8kit.plan.types import QuantPlan, TensorQuant
from int8kit.plan.weight_plan import plan_weights, snq_layers
from int8kit.thresholds import DIVERGENCE_METHODS, Target, resolve

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
    quantized = choose_nodes(facts, {}, QuantPlan())
    wanted: dict[str, None] = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None:
            continue
        if node.name in quantized:
            names = list(node.input[:1]) if info.role == SHARED else _activation_inputs(node, info)
            names += [o for o in node.output if info.role not in (COMPUTE, BINARY) or fusable_activation(facts, o, {}) is None]
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


def plan(model: onnx.ModelProto, stats: Stats, config: QuantConfig) -> QuantPlan:
    """Decide, for every tensor, how it is quantized (or that it stays float).

    Neither argument is changed. Results that do not depend on ``config`` are reused from
    earlier calls with the same ``model`` and ``stats`` objects (``clear_plan_caches()`` forgets them).
    """
    ctx = context_for(model, stats)
    facts = ctx.facts
    keep_activation_nodes = config.signed_activations or config.inputs_only or 8 < config.bitwidth < 16
    result = QuantPlan(signed_storage=config.signed_activations, keep_activation_nodes=keep_activation_nodes,
                       float_weights_when_unfused=not keep_activation_nodes)
    user_float = float_nodes(facts, config)
    forced_float = dict(user_float)
    forced_float.update(_outlier_inputs(ctx, config))
    forced_float.update(_uncalibrated_producers(facts, stats, forced_float))
    result.float_nodes.update(forced_float)

    quantized = choose_nodes(facts, forced_float, result)
    need = tensors_to_quantize(facts, quantized, forced_float, result, inputs_only=config.inputs_only)
    shared_src = shared_sources(facts, quantized, need)

    # Activation parameters: own statistics, or the source tensor's for scale-sharing ops.
    near_input = _float_input_region(facts, quantized)
    for name in _topological_tensors(facts, need):
        if name in shared_src:
            continue
        result.tensors[name] = _activation(ctx, config, name, name in near_input, result.method_choices)
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
        assign_channel_steps(ctx, quantized, result, frozenset(f.nodes[-1] for f in integer.values()))
    result.integer_hardswish = {y: f for y, f in integer.items() if result.tensors[y].channel_step is None}
    drop_inner_tensors(facts, result)
    check_overrides_apply(facts, config, result)
    warn_narrow_concat_inputs(facts, result, ctx.warned)  # once per context, not once per re-plan

    # Weights and biases of compute nodes.
    computes = [n for n in facts.nodes if n.name in quantized and op_info(n.op_type).role == COMPUTE]
    snq = snq_layers(ctx, computes, config)
    for node in computes:
        plan_weights(ctx, node, config, result, snq=node.name in snq)
    return result


def _uncalibrated_producers(facts: GraphFacts, stats: Stats, forced: dict[str, str]) -> dict[str, str]:
    """Conv/Add whose output has no statistics and cannot be fused with the Relu/Clip after it
    (because that one is kept float): they stay float instead of guessing a range."""
    out: dict[str, str] = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role not in (COMPUTE, BINARY) or node.name in forced or not node.output:
            continue
        tensor = node.output[0]
        skipped_by_calibration = fusable_activation(facts, tensor, {}) is not None
        if skipped_by_calibration and tensor not in stats.tensors and fusable_activation(facts, tensor, forced) is None:
            out[node.name] = "its output was not calibrated (the Relu/Clip after it is kept float)"
    return out


def _outlier_inputs(ctx: PlanContext, config: QuantConfig) -> dict[str, str]:
    """MatMul/Gemm whose activation input holds extreme outliers stay float.

    One per-tensor INT8 scale cannot hold both the bulk and outliers many times beyond it: the
    FFN down-projection input of BERT-like encoders has a max 5-7x its 99.99th percentile, and
    either clipping or covering those outliers costs far more accuracy than the layer's
    speed-up is worth. ``outlier_ratio`` (0 disables) sets the limit.
    """
    out: dict[str, str] = {}
    if not config.outlier_ratio:
        return out
    for node in ctx.facts.nodes:
        info = op_info(node.op_type)
        if info is None or not info.matrix or node.input[0] not in ctx.stats.tensors:
            continue
        hist = ctx.stats.tensors[node.input[0]].hist
        lo, hi = ctx.range("percentile", hist, Target(), percentile=99.99)
        bulk = max(abs(lo), abs(hi))
        if bulk > 0 and hist.absmax > config.outlier_ratio * bulk:
            out[node.name] = f"input outliers: max {hist.absmax:.3g} > {config.outlier_ratio:g} x 99.99th percentile {bulk:.3g}"
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


def _activation(ctx: PlanContext, config: QuantConfig, name: str, near_input: bool = False,
                choices: dict | None = None) -> TensorQuant:
    facts = ctx.facts
    tstats = ctx.stats.tensors.get(name)
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
    if ov is not None and ov.with_offset is not None and not signed:  # AMCT's per-layer with_offset
        symmetric = not ov.with_offset
    domain = None if signed else value_domain(facts, name)  # TensorRT's symmetric int8 cannot start a range at -3
    choice = None
    if method == "auto":  # per tensor, the candidate whose readers see least error (plan/method_choice.py)
        choice = choose(ctx, name, tstats, auto_candidates(tstats.hist, producer), bits=config.bitwidth,
                        symmetric=symmetric, signed=signed, domain=domain)
    elif config.method_rules and not params and not (ov is not None and (ov.th_method or ov.threshold)) \
            and resolve(method)[0] in DIVERGENCE_METHODS:  # the user's own choices are not second-guessed
        choice = guard_divergence(ctx, name, tstats, method, bits=config.bitwidth, symmetric=symmetric,
                                  signed=signed, domain=domain)
    if choice is not None:
        method, params = choice.method, {}
        if choices is not None:
            choices[name] = choice.record()
    return activation_quant(
        name,
        tstats.hist,
        method=method,
        params=params,
        bits=config.bitwidth,
        symmetric=symmetric,
        th_scale=ov.th_scale if ov else 1.0,
        domain=domain,
        threshold=ov.threshold if ov else None,
        signed=signed,
        ranges=ctx.range,
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
        if node.name not in quantized or op_info(node.op_type).role != VARIADIC:
            continue
        out = result.tensors.get(node.output[0])
        if out is None:
            continue
        for inp in node.input:
            if inp in result.tensors and len(facts.consumers.get(inp, [])) == 1 and inp not in facts.graph_inputs:
                result.tensors[inp] = type(out)(**{**out.__dict__, "name": inp})
