"""The deploy model: the fake-quant (QDQ) model with every INT8 convolution written as one
``QLinearConv`` (ONNX's operator form, as onnxruntime runs it):

    x_q ─DQ─▶ x ─┐
    W_q ─DQ─▶ W ─┼─ Conv ─▶ y ─Q─▶ y_q          becomes      QLinearConv(x_q, s_x, z_x, W_q, s_w, z_w, s_y, z_y, b_q) ─▶ y_q
    b_q ─DQ─▶ b ─┘

so the file holds INT8 weights, INT32 biases and the record's scales and offsets as the inputs of
the integer op, with no float weights at all. Everything else (Add, pooling, concat, float
layers) stays as in the fake-quant model, whose QDQ pairs onnxruntime fuses itself. The two models
compute the same integers in onnxruntime.
"""

from __future__ import annotations

import copy

import onnx
from onnx import helper



def _by_output(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def to_deploy(fake: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the fake-quant model with each DQ -> Conv -> Q group as one QLinearConv."""
    model = copy.deepcopy(fake)
    producer, readers = _by_output(model), _readers(model)
    graph_outputs = {o.name for o in model.graph.output}
    drop: set[int] = set()
    new: dict[int, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        dqs = [producer.get(i) for i in node.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" and d.domain in ("", "ai.onnx") for d in dqs):
            continue
        y = node.output[0]
        outs = readers.get(y, [])
        if y in graph_outputs or len(outs) != 1 or outs[0].op_type != "QuantizeLinear" or outs[0].domain not in ("", "ai.onnx"):
            continue
        q = outs[0]
        x_dq, w_dq = dqs[0], dqs[1]
        inputs = [*x_dq.input[:3], *w_dq.input[:3], q.input[1], q.input[2]]
        if len(dqs) > 2:
            inputs.append(dqs[2].input[0])  # the INT32 bias itself (its DQ scale is s_x * s_w)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        fused = helper.make_node("QLinearConv", inputs, list(q.output), name=node.name, **attrs)
        new[id(node)] = fused
        drop.add(id(q))
        for d in dqs[1:]:  # the weight's and bias's DQ go when nothing else reads them
            if len(readers.get(d.output[0], [])) == 1:
                drop.add(id(d))
    nodes = [new.get(id(n), n) for n in model.graph.node if id(n) not in drop]
    used = {i for n in nodes for i in n.input}
    # the activation DQs still feed others; a DQ nothing reads any more goes
    nodes = [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] not in used
                                      and n.output[0] not in graph_outputs)]
    used = {i for n in nodes for i in n.input} | graph_outputs
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model
