"""Fold a constant ``x * s + b`` into the convolutions that read it.

PP-LCNetV3 (the PP-OCRv4 backbones) follows each HardSwish with a learnable affine block: a Mul
and an Add by constants. Nothing before it is linear, so it cannot fold backwards like a
BatchNorm; but every reader is a conv, and ``conv(x * s + b)`` is ``conv'(x)`` with the weights'
input columns times ``s`` and ``b`` summed into the bias. Exact when the convs do not pad (a padded
border would read ``b`` instead of ``0``), or when there is no ``b``. Each fold removes two
elementwise passes over the feature map, in the FP32 and the INT8 model alike.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx

from int8kit.graph.graphview import GraphView
from int8kit.graph.passes.linear import channel_vector, conv_group, conv_input_index, node_attr


def _constant_input(view: GraphView, node: onnx.NodeProto) -> tuple[str, np.ndarray] | None:
    """(the other input, the float constant) of a two-input node with exactly one constant input."""
    if len(node.input) != 2 or node.domain not in ("", "ai.onnx"):
        return None
    arrays = [view.get_array(i) for i in node.input]
    consts = [k for k, a in enumerate(arrays) if a is not None and a.dtype.kind == "f"]
    if len(consts) != 1:
        return None
    k = consts[0]
    return node.input[1 - k], arrays[k]


def _affine_chain(view: GraphView, last: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str, np.ndarray, np.ndarray] | None:
    """``last`` (Mul or Add) as ``x * s + b``: (nodes, x, s, b) with constants as given."""
    found = _constant_input(view, last)
    if found is None:
        return None
    src, const = found
    if last.op_type == "Mul":
        return [last], src, const, np.zeros(1, const.dtype)
    if last.op_type != "Add":
        return None
    mul = view.producer(src)
    inner = _constant_input(view, mul) if mul is not None and mul.op_type == "Mul" else None
    if inner is None or view.sole_consumer(src) is not last:
        return [last], src, np.ones(1, const.dtype), const
    return [mul, last], inner[0], inner[1], const


def _pads(node: onnx.NodeProto) -> bool:
    auto_pad = node_attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return auto_pad not in ("NOTSET", "VALID") or any(node_attr(node, "pads", []))


def fold_affine_into_next(model: onnx.ModelProto, log: list[str], no_fuse: Collection[str] = ()) -> int:
    """Fold every constant per-channel ``x * s + b`` read only by convs into them; returns the count."""
    view = GraphView(model.graph)
    folded = 0
    for last in view.nodes_of_type("Mul", "Add"):
        readers = view.consumers_of(last.output[0])
        if not readers or view.is_graph_output(last.output[0]):
            continue
        if any(r.op_type != "Conv" or r.input[0] != last.output[0] or not view.is_constant(r.input[1]) for r in readers):
            continue
        chain = _affine_chain(view, last)
        if chain is None:
            continue
        nodes, x, s, b = chain
        if any(n.name in no_fuse for n in nodes + readers):
            continue
        weights = [view.get_array(r.input[1]) for r in readers]
        counts = {w.shape[1] * conv_group(r) for r, w in zip(readers, weights)}
        if len(counts) != 1:
            continue
        (channels,) = counts
        scale = channel_vector(s, channels, 1, weights[0].ndim)
        shift = channel_vector(b, channels, 1, weights[0].ndim)
        if scale is None or shift is None:
            continue
        if np.any(shift != 0) and any(_pads(r) for r in readers):
            continue
        for conv, w in zip(readers, weights):
            index = conv_input_index(w.shape, conv_group(conv))
            extra = (1,) * (w.ndim - 2)
            w64 = w.astype(np.float64)
            bias = view.get_array(conv.input[2]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
            bias = bias + (w64 * shift[index].reshape(index.shape + extra)).reshape(w.shape[0], -1).sum(axis=1)
            view.write_input_constant(conv, 1, (w64 * scale[index].reshape(index.shape + extra)).astype(w.dtype))
            view.write_input_constant(conv, 2, bias.astype(w.dtype))
            view.set_input(conv, 0, x)
        for node in nodes:
            view.remove_node(node)
        log.append(f"folded {' + '.join(f'{n.op_type} {n.name!r}' for n in nodes)} into the "
                   f"{len(readers)} conv(s) reading it: {', '.join(repr(r.name) for r in readers)}")
        folded += 1
    view.commit()
    return folded
