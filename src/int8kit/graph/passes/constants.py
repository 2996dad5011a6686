"""Turn ``Constant`` nodes into initializers so that weights look the same in every model."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from int8kit.graph.graphview import GraphView

logger = logging.getLogger(__name__)


def constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a ``Constant`` node produces, or ``None`` for forms we leave alone (sparse)."""
    for attr in node.attribute:
        name = attr.name
        if name == "value":
            return attr.t
        if name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
        if name == "value_int":
            return numpy_helper.from_array(np.array(attr.i, dtype=np.int64))
        if name == "value_ints":
            return numpy_helper.from_array(np.array(list(attr.ints), dtype=np.int64))
        if name == "value_string":
            return helper.make_tensor("", onnx.TensorProto.STRING, [], [attr.s])
        if name == "value_strings":
            return helper.make_tensor("", onnx.TensorProto.STRING, [len(attr.strings)], list(attr.strings))
    return None


def constants_to_initializers(model: onnx.ModelProto, log: list[str]) -> int:
    """Replace main-graph ``Constant`` nodes by initializers of the same name.

    Constants that are graph outputs stay nodes (an initializer cannot portably be an output).
    Models with IR version < 4 also get the new initializers listed as graph inputs, as that IR
    requires.
    """
    view = GraphView(model.graph)
    moved = 0
    for node in view.nodes_of_type("Constant"):
        out = node.output[0]
        if view.is_graph_output(out) or out in view.initializers:
            continue
        tensor = constant_value(node)
        if tensor is None:
            logger.debug("Constant '%s' has no dense value; kept as a node", node.name)
            continue
        init = onnx.TensorProto()
        init.CopyFrom(tensor)
        init.name = out
        model.graph.initializer.append(init)
        view.initializers[out] = model.graph.initializer[-1]
        if model.ir_version < 4:
            model.graph.input.append(helper.make_tensor_value_info(out, init.data_type, list(init.dims)))
        view.remove_node(node)
        moved += 1
    view.commit()
    if moved:
        log.append(f"moved {moved} Constant node(s) into initializers")
    return moved
