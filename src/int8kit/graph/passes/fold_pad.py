"""Fold a constant zero ``Pad`` into the ``pads`` attribute of the convolutions that read it.

TF-style "same" padding (EfficientNet, MobileNet exports) is a Pad node before each strided or
depthwise Conv. Left in the graph it would be quantized as its own tensor (DQ -> Pad -> Q), which
keeps onnxruntime from fusing the Conv into QLinearConv and runs the Pad in float; folded, the
Conv simply pads with the input's zero point.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper

from int8kit.graph.graphview import GraphView


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _static_pads(view: GraphView, pad: onnx.NodeProto) -> np.ndarray | None:
    """The Pad's ``pads`` as an int array when it is a constant zero pad of spatial axes only."""
    mode = _attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(pad.input) > 3 and pad.input[3]:
        return None  # opset 18 'axes': not worth the generality
    if len(pad.input) > 1:  # opset >= 11: pads and constant_value are inputs
        pads = view.get_array(pad.input[1])
        if len(pad.input) > 2 and pad.input[2]:
            value = view.get_array(pad.input[2])
            if value is None or value.size != 1 or float(value.reshape(-1)[0]) != 0.0:
                return None
    else:  # opset < 11: attributes
        pads = _attr(pad, "pads")
        if float(_attr(pad, "value", 0.0)) != 0.0:
            return None
    if pads is None:
        return None
    pads = np.asarray(pads, dtype=np.int64).reshape(-1)
    rank = pads.size // 2
    if rank < 3 or np.any(pads < 0) or np.any(pads[[0, 1, rank, rank + 1]] != 0):
        return None
    return pads


def fold_pads(model: onnx.ModelProto, log: list[str], no_fuse: Collection[str] = ()) -> int:
    """Fold constant zero Pads read only by Convs into their pads attribute; returns the count."""
    view = GraphView(model.graph)
    folded = 0
    for pad in view.nodes_of_type("Pad"):
        pads = _static_pads(view, pad)
        if pads is None or pad.name in no_fuse:
            continue
        out = pad.output[0]
        convs = view.consumers_of(out)
        if view.is_graph_output(out) or not convs:
            continue
        rank = pads.size // 2
        spatial = rank - 2
        ok = all(
            c.op_type == "Conv"
            and c.domain in ("", "ai.onnx")
            and c.input[0] == out
            and out not in c.input[1:]
            and c.name not in no_fuse
            and _attr(c, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and len(_attr(c, "pads") or [0] * (2 * spatial)) == 2 * spatial
            for c in convs
        )
        if not ok:
            continue
        begin, end = pads[2:rank], pads[rank + 2 :]
        for conv in convs:
            old = list(_attr(conv, "pads") or [0] * (2 * spatial))
            new = [int(old[i] + begin[i]) for i in range(spatial)] + [int(old[spatial + i] + end[i]) for i in range(spatial)]
            for a in [a for a in conv.attribute if a.name == "pads"]:
                conv.attribute.remove(a)
            conv.attribute.append(helper.make_attribute("pads", new))
            view.set_input(conv, 0, pad.input[0])
        view.remove_node(pad)
        log.append(f"folded Pad '{pad.name}' into {', '.join(repr(c.name) for c in convs)}")
        folded += 1
    view.commit()
    return folded
