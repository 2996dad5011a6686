"""Write a QDQ ONNX model from a QuantPlan. Reads only the plan and the model.

Layout produced (onnxruntime fuses these patterns into real INT8 kernels)::

    weight:      W_quantized(int8) ─DQ─▶ W            (consumers keep reading "W")
    activation:  producer ─▶ t_float ─Q─▶ t_quantized ─DQ─▶ t   (consumers keep reading "t")
    model input: x ─Q─▶ x_quantized ─DQ─▶ x_dequantized         (consumers rewired)
    fused Relu:  Conv ─▶ y ─Relu─▶ r   becomes   Conv ─▶ r_float ─Q(range ≥ 0)─▶ … ─DQ─▶ r

Keeping every original tensor name means graph outputs, per-layer names and value_info stay valid.

8-bit activations are always written as uint8: a planned int8 grid (zero point z) becomes the
identical uint8 grid with zero point z + 128. onnxruntime fuses DQ -> Conv -> Q (and Add) only when
input and output share one type, so a uint8 ReLU output feeding a Conv with a signed output stayed
float; and U8S8 is onnxruntime's fast x86 kernel.
"""

from __future__ import annotations

import copy
import heapq

import numpy as np
import onnx
from onnx import helper, numpy_helper

from int8kit.errors import ModelError
from int8kit.graph.graphview import node_inputs
from int8kit.graph.model_memo import per_model
from int8kit.graph.ops import SHARED, op_info
from int8kit.plan.types import QuantPlan, TensorQuant

_NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32}
_MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
_CONTRIB = "com.microsoft"  # 16-bit Q/DQ in onnxruntime without bumping the model's opset


def emit_qdq(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """Return a new model with QuantizeLinear/DequantizeLinear inserted as ``plan`` says."""
    model = _with_min_opset(model)
    graph = model.graph
    nodes = list(graph.node)
    new_inits: list[onnx.TensorProto] = []

    # Signed symmetric storage cannot clip at 0, and 9-15 bit grids in 16-bit types saturate past a
    # Clip's bound, so there the Relu/Clip stays a node before the QuantizeLinear (TensorRT fuses
    # Conv -> Relu -> Q itself).
    nodes, fused_acts = (nodes, {}) if plan.keep_activation_nodes else _remove_fused(nodes, plan)
    if plan.integer_hardswish:
        nodes, gate_inits = _integer_hardswish(nodes, plan.integer_hardswish)
        new_inits += gate_inits
    producer = {o: (n, k) for n in nodes for k, o in enumerate(n.output)}
    graph_inputs = {i.name for i in graph.input}
    float_reads = _float_compute_reads(nodes, producer, plan)

    constant_names = {tq.name for tq in plan.tensors.values() if tq.values is not None}
    new_inits += [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in plan.float_biases.items()]
    constant_names |= set(plan.float_biases)  # replaced by their corrected float values
    kept_inits = [t for t in graph.initializer if t.name not in constant_names]
    kept_inputs = [i for i in graph.input if i.name not in constant_names]

    as_float = _unfused_conv_constants(nodes, float_reads, plan) if plan.float_weights_when_unfused else set()
    unread = _read_only_in_float(nodes, float_reads, plan, {o.name for o in graph.output})
    qdq_nodes, inits, uses_contrib = _insert_qdq(nodes, producer, graph_inputs, {t.name for t in graph.initializer},
                                                 plan, as_float | unread)
    new_inits += inits
    _feed_float_readers(nodes, float_reads, fused_acts, graph_inputs, unread, producer)
    _assemble(graph, nodes + qdq_nodes, kept_inits + new_inits, kept_inputs)
    if uses_contrib and not any(o.domain == _CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_CONTRIB, 1))
    return model


def _insert_qdq(nodes: list[onnx.NodeProto], producer: dict, graph_inputs: set[str], init_names: set[str],
                plan: QuantPlan, skip: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], bool]:
    """The Q/DQ nodes and their initializers for every planned tensor; producers and readers of
    activations are rewired in place (``x`` is written as ``x_float``, readers see DQ's ``x``).
    Planned constants named in ``skip`` are written as their dequantized values instead, and planned
    activations named there get no QuantizeLinear/DequantizeLinear at all."""
    qdq_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    uses_contrib = False
    # readers of channel-scaled tensors, found in one pass (a scan per tensor cost 4 ms on PP-OCRv4 rec)
    readers = _readers(nodes) if any(tq.channel_step is not None for tq in plan.tensors.values()) else {}
    for tq in plan.tensors.values():
        if tq.name in skip and tq.values is None:
            continue
        scale, zp = _param_inits(tq, plan.signed_storage)
        new_inits += [scale, zp]
        contrib = tq.dtype in ("int16", "uint16")
        uses_contrib |= contrib
        if tq.values is not None:
            if tq.name not in init_names:
                raise ModelError(f"planned constant '{tq.name}' is not an initializer of the model; re-run the optimizer.")
            if tq.name in skip:
                new_inits.append(numpy_helper.from_array(tq.dequantized(), tq.name))
                continue
            qname = tq.name + "_quantized"
            new_inits.append(numpy_helper.from_array(np.asarray(tq.values, dtype=_NP_DTYPES[tq.dtype]), qname))
            qdq_nodes.append(_dq(qname, scale.name, zp.name, tq.name, tq.axis, contrib))
            continue
        if tq.name in graph_inputs:
            qname, dqname = tq.name + "_quantized", tq.name + "_dequantized"
            for node in nodes:
                for i, inp in enumerate(node.input):
                    if inp == tq.name:
                        node.input[i] = dqname
            qdq_nodes.append(_q(tq.name, scale.name, zp.name, qname, contrib))
            qdq_nodes.append(_dq(qname, scale.name, zp.name, dqname, None, contrib))
            continue
        if tq.name not in producer:
            raise ModelError(f"planned tensor '{tq.name}' has no producer in the model; the plan does not match the model.")
        node, k = producer[tq.name]
        fname, qname = tq.name + "_float", tq.name + "_quantized"
        node.output[k] = fname
        if tq.channel_step is not None:
            new_inits += _channel_scaled_qdq(tq, plan, readers[tq.name], qdq_nodes, scale.name, zp.name)
            continue
        qdq_nodes.append(_q(fname, scale.name, zp.name, qname, contrib))
        qdq_nodes.append(_dq(qname, scale.name, zp.name, tq.name, None, contrib))
    return qdq_nodes, new_inits, uses_contrib


def _feed_float_readers(nodes: list[onnx.NodeProto], float_reads: list, fused_acts: dict[str, onnx.NodeProto],
                        graph_inputs: set[str], unread: set[str], producer: dict) -> None:
    """Point each float reader found by ``_float_compute_reads`` at the unquantized tensor (with a
    fused activation applied again where the float source is its pre-activation input). A tensor
    in ``unread`` has no QuantizeLinear: its producer, or the activation applied again, writes it
    under its own name (which the per-layer comparison reads)."""
    activated: set[str] = set()
    for node, idx, tensor in float_reads:
        act = fused_acts.get(tensor)
        if tensor in unread and act is not None and tensor not in activated:
            producer[tensor][0].output[producer[tensor][1]] = tensor + "_float"  # the pre-activation values
        source = tensor if tensor in graph_inputs or (tensor in unread and act is None) else tensor + "_float"
        activated_name = tensor if tensor in unread else tensor + "_float_activated"
        if act is not None and tensor in activated:
            source = activated_name  # another float reader already re-applies it
        elif act is not None:
            activated.add(tensor)
            again = copy.deepcopy(act)
            again.name = act.name + "_for_float"
            again.input[0] = source
            source = activated_name
            again.output[0] = source
            nodes.append(again)
        node.input[idx] = source


def _assemble(graph: onnx.GraphProto, all_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
              kept_inputs: list) -> None:
    """Write nodes (in topological order), the initializers something reads, and the inputs."""
    reads = [node_inputs(n) for n in all_nodes]  # once: the initializer filter and the ordering both need them
    used = {i for names in reads for i in names} | {o.name for o in graph.output}  # If/Loop bodies too
    # constants only the removed Relu/Clip nodes read (Clip bounds) go away with them
    kept = [t for t in inits if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.node[:]
    graph.node.extend(_topological(all_nodes, reads, {i.name for i in kept_inputs} | {t.name for t in kept}))


def _remove_fused(nodes: list[onnx.NodeProto], plan: QuantPlan) -> tuple[list[onnx.NodeProto], dict[str, onnx.NodeProto]]:
    """Drop fused Relu/Clip nodes; their producer writes the activation's output name instead.

    Returns the remaining nodes and the removed activations keyed by their output name.
    """
    if not plan.fused:
        return nodes, {}
    by_name = {n.name: n for n in nodes}
    removed = {by_name[name].output[0]: copy.deepcopy(by_name[name]) for name in plan.fused}
    renamed = {src: by_name[act_name].output[0] for act_name, src in plan.fused.items()}  # one pass, not one per act
    for node in nodes:
        for k, out in enumerate(node.output):
            if out in renamed:
                node.output[k] = renamed[out]
    return [n for n in nodes if n.name not in plan.fused], removed


def _integer_hardswish(nodes: list[onnx.NodeProto], forms: dict) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Replace each HardSwish form by ``x * DQ(Q(x + shift, top/255), factor top/255)`` (plan/integer_ops.py).

    The gate's QuantizeLinear and DequantizeLinear differ in scale on purpose when ``factor != 1``:
    the pair reads ``clip(x + shift, 0, top)`` back already multiplied by the factor. ``x`` and
    ``y`` keep their planned QDQ, so onnxruntime fuses QLinearAdd and QLinearMul.
    """
    replaced = {name for form in forms.values() for name in form.nodes}
    last = {form.nodes[-1]: form for form in forms.values()}
    zero = "int8kit_hardswish_zero_point"
    inits, out = [numpy_helper.from_array(np.array(0, np.uint8), zero)], []
    for node in nodes:
        if node.name not in replaced:
            out.append(node)
        if node.name not in last:
            continue
        form, base = last[node.name], node.name
        inits += [
            numpy_helper.from_array(np.array(1, np.uint8), base + "_shift_quantized"),  # shift = 1 * scale, exactly
            numpy_helper.from_array(np.array(form.shift, np.float32), base + "_shift_scale"),
            numpy_helper.from_array(np.array(form.top / 255.0, np.float32), base + "_gate_qscale"),
            numpy_helper.from_array(np.array(form.factor * form.top / 255.0, np.float32), base + "_gate_scale"),
        ]
        out += [
            _dq(base + "_shift_quantized", base + "_shift_scale", zero, base + "_shift", None, False),
            helper.make_node("Add", [form.x, base + "_shift"], [base + "_shifted"], name=base + "_shifted"),
            _q(base + "_shifted", base + "_gate_qscale", zero, base + "_gate_quantized", False),
            _dq(base + "_gate_quantized", base + "_gate_scale", zero, base + "_gate", None, False),
            helper.make_node("Mul", [form.x, base + "_gate"], [form.y], name=base + "_integer"),
        ]
    return out, inits


def _readers(nodes: list[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """The nodes reading each tensor (each node once), in node order."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in set(node.input):
            out.setdefault(name, []).append(node)
    return out


def _channel_scaled_qdq(tq: TensorQuant, plan: QuantPlan, readers: list[onnx.NodeProto],
                         qdq_nodes: list[onnx.NodeProto], scale: str, zp: str) -> list[onnx.TensorProto]:
    """Per-channel steps as a float Mul before a per-tensor QuantizeLinear (onnxruntime's per-axis
    QuantizeLinear is a scalar loop, 15x slower than the whole conv). The conv readers get the
    per-tensor DequantizeLinear of the channel-scaled values: a QLinearConv for onnxruntime.

    Layout::  t_float ─Mul(g)─▶ t_float_scaled ─Q─▶ t_quantized ─DQ─▶ t_channel_scaled   (convs)

    with ``g_c = scale / step_c``. ``t`` itself is no longer in the model (its readers read
    ``t_channel_scaled``; a Mul back to ``t`` would cost as much as the first, onnxruntime keeps it).
    """
    # ``readers``: the nodes reading ``tq``; the plan gives steps only to tensors convs alone read
    rank = np.asarray(plan.tensors[readers[0].input[1]].values).ndim
    shape = (1, -1) + (1,) * (rank - 2)
    gain = (float(tq.scale) / tq.channel_step.astype(np.float64)).reshape(shape)
    gain_init = numpy_helper.from_array(gain.astype(np.float32), tq.name + "_channel_gain")
    fname, qname, scaled = tq.name + "_float", tq.name + "_quantized", tq.name + "_channel_scaled"
    for node in readers:
        for i, inp in enumerate(node.input):
            if inp == tq.name:
                node.input[i] = scaled
    qdq_nodes.append(helper.make_node("Mul", [fname, gain_init.name], [fname + "_scaled"], name=tq.name + "_channel_gain"))
    qdq_nodes.append(_q(fname + "_scaled", scale, zp, qname, False))
    qdq_nodes.append(_dq(qname, scale, zp, scaled, None, False))
    return [gain_init]


def _read_only_in_float(nodes: list[onnx.NodeProto], float_reads: list, plan: QuantPlan, graph_outputs: set[str]) -> set[str]:
    """Planned activations every reader of which reads the unquantized source (``_float_compute_reads``):
    a QuantizeLinear there would feed nothing, yet cost its run and keep onnxruntime from fusing the
    producer's activation into it (a second reader)."""
    float_readings: dict[str, int] = {}
    for _, _, tensor in float_reads:
        float_readings[tensor] = float_readings.get(tensor, 0) + 1
    readings: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            if name in float_readings:
                readings[name] = readings.get(name, 0) + 1
    return {name for name, count in float_readings.items()
            if readings.get(name) == count and name not in graph_outputs and plan.tensors[name].channel_step is None}


def _unfused_conv_constants(nodes: list[onnx.NodeProto], float_reads: list, plan: QuantPlan) -> set[str]:
    """Weights and biases onnxruntime reads in float: those of convs planned INT8 whose output does not
    go to one QuantizeLinear alone (a float layer reads it, ``analysis.ort_fusion``), so that they run
    in float. DequantizeLinear weights would keep such a conv off onnxruntime's fast float kernels
    (its blocked NCHWc layout needs constant weights): EfficientNet-Lite0's blocks.1 depthwise conv
    ran 8x slower than in FP32. Its dequantized values run the same arithmetic. A constant another
    node reads dequantized keeps its DequantizeLinear, and so does a conv with SNQ weights (their
    4-bit codes are what the INT4 deploy model packs)."""
    read_float = {tensor for _, _, tensor in float_reads}
    readers: dict[str, list[bool]] = {}  # planned constant -> per reader: runs in float?
    for node in nodes:
        info = op_info(node.op_type)
        out = node.output[0] if node.output else ""
        weight = plan.tensors.get(node.input[1]) if len(node.input) > 1 else None
        in_float = (info is not None and info.integer_conv and not (weight is not None and weight.method == "snq")
                    and (out not in plan.tensors or out in read_float))
        for name in set(node.input):
            tq = plan.tensors.get(name)
            if tq is not None and tq.values is not None:
                readers.setdefault(name, []).append(in_float)
    return {name for name, flags in readers.items() if all(flags)}


def _float_compute_reads(nodes, producer, plan: QuantPlan) -> list[tuple[onnx.NodeProto, int, str]]:
    """Where a float Conv/ConvTranspose/Gemm must read the unquantized source of its input.

    onnxruntime quantizes the float weights of such a node per tensor by itself when its input
    comes straight from a DequantizeLinear (its WeightBiasQuantization pass), which silently
    turns a layer the user kept in float into a badly quantized one (depthwise convs lose all
    accuracy). Feeding it the float tensor keeps it float, with full-precision input. Chains of
    unquantized scale-sharing ops (Pad, Reshape...) in between are followed, since onnxruntime
    fuses a Pad into the Conv.
    """
    reads = []
    for node in nodes:
        quantized_inputs = [t in plan.tensors and plan.tensors[t].values is None for t in node.input if t]
        info = op_info(node.op_type)
        if info is None:
            continue
        if node.name in plan.float_nodes and info.refused_from_dq and quantized_inputs and all(quantized_inputs):
            # a float Add/Mul/Concat whose every input comes from a DequantizeLinear: onnxruntime
            # would fuse DequantizeLinear -> Add -> QuantizeLinear back into QLinearAdd, so it reads
            # the float sources (with one unquantized input the pattern cannot match: left alone)
            reads += [(node, i, t) for i, t in enumerate(node.input) if t]
            continue
        if not info.ort_quantizes_float_weight or len(node.input) < 2:
            continue
        if node.input[1] in plan.tensors:
            continue  # a quantized layer
        reader, tensor = node, node.input[0]
        while tensor not in plan.tensors and tensor in producer:
            prev = producer[tensor][0]
            info = op_info(prev.op_type)
            if info is None or info.role != SHARED or len(prev.output) != 1:
                break
            reader, tensor = prev, prev.input[0]
        tq = plan.tensors.get(tensor)
        if tq is not None and tq.values is None:
            reads.append((reader, 0, tensor))
    return reads


def _param_inits(tq: TensorQuant, signed_storage: bool = False) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    scale = numpy_helper.from_array(np.asarray(tq.scale, dtype=np.float32), tq.name + "_scale")
    dtype, zero_point = tq.stored(signed_storage)  # same grid, unsigned (see the module docstring)
    zp = numpy_helper.from_array(np.asarray(zero_point, dtype=_NP_DTYPES[dtype]), tq.name + "_zero_point")
    return scale, zp


def _q(x: str, scale: str, zp: str, out: str, contrib: bool) -> onnx.NodeProto:
    return helper.make_node("QuantizeLinear", [x, scale, zp], [out], name=out + "_QuantizeLinear", domain=_CONTRIB if contrib else "")


def _dq(x: str, scale: str, zp: str, out: str, axis: int | None, contrib: bool) -> onnx.NodeProto:
    kwargs = {"axis": axis} if axis is not None else {}
    return helper.make_node(
        "DequantizeLinear", [x, scale, zp], [out], name=out + "_DequantizeLinear", domain=_CONTRIB if contrib else "", **kwargs
    )


def _with_min_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` at opset 13 or newer. Converting costs 20-30 ms (PP-OCRv4 rec), more than
    the rest of an emit: re-emitting the same model object copies the one converted version."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is not None and version < _MIN_OPSET:
        return copy.deepcopy(per_model(model, "opset >= 13", _converted))
    return copy.deepcopy(model)


def _converted(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.version_converter.convert_version(model, _MIN_OPSET)
    except Exception as exc:
        version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        raise ModelError(
            f"the model uses opset {version} and could not be converted to opset {_MIN_OPSET} ({exc}); "
            "re-export it with opset 13 or newer."
        ) from None


def _topological(nodes: list[onnx.NodeProto], reads: list[list[str]], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so each runs after its inputs exist (Kahn's algorithm, stable); ``reads[i]``:
    the tensors node ``i`` reads (``node_inputs``)."""
    waiting: dict[str, list[int]] = {}
    missing = [0] * len(nodes)
    for idx in range(len(nodes)):
        for inp in set(i for i in reads[idx] if i not in available):
            waiting.setdefault(inp, []).append(idx)
            missing[idx] += 1
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for out in nodes[idx].output:
            for j in waiting.pop(out, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        done = set(order)
        stuck = [nodes[i].name for i in range(len(nodes)) if i not in done][:5]
        raise ModelError(f"the quantized graph has a cycle or a dangling input near nodes {stuck}; this is a bug, please report it.")
    return [nodes[i] for i in order]
