"""A small ONNX graph builder that knows every tensor's shape as the graph grows.

Caffe layers need their inputs' shapes (pooling output sizes, prior boxes, crops, flatten and
reshape targets), so every node is shape-inferred by onnx the moment it is added.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

OPSET = 17
_OPSETS = [helper.make_opsetid("", OPSET)]
# Constant inputs up to this many values are passed to shape inference (Reshape targets, scales).
_DATA_LIMIT = 64


class GraphBuilder:
    """Collects nodes, initializers, inputs and the static shape of every tensor."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.types: dict[str, onnx.TypeProto] = {}
        self.used: set[str] = set()
        self._small: dict[str, onnx.TensorProto] = {}

    def unique(self, hint: str) -> str:
        """A tensor or node name not used yet, based on ``hint``."""
        name, n = hint, 1
        while name in self.used:
            name = f"{hint}_{n}"
            n += 1
        self.used.add(name)
        return name

    def add_input(self, name: str, shape: Sequence[int]) -> None:
        """Declare a float graph input."""
        vi = helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
        self.inputs.append(vi)
        self.types[name] = vi.type
        self.used.add(name)

    def const(self, hint: str, value: np.ndarray | Sequence, dtype=np.float32, exact: bool = False) -> str:
        """Add an initializer (float32 unless ``dtype`` says otherwise) and return its name.

        ``exact`` uses ``hint`` itself as the name (a name reserved earlier for a layer's top).
        """
        arr = np.asarray(value, dtype=dtype)
        name = hint if exact else self.unique(hint)
        self.used.add(name)
        tensor = numpy_helper.from_array(arr, name)
        self.initializers[name] = tensor
        self.types[name] = helper.make_tensor_type_proto(tensor.data_type, list(arr.shape))
        if arr.size <= _DATA_LIMIT:
            self._small[name] = tensor
        return name

    def value(self, name: str) -> np.ndarray | None:
        """The constant value of ``name`` when it is an initializer, else None."""
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs) -> None:
        """Append a node whose output names are already reserved, and infer their shapes."""
        node = helper.make_node(op, list(inputs), list(outputs), name=name, **attrs)
        self.nodes.append(node)
        self.used.update(outputs)
        known = {i: self.types[i] for i in inputs if i in self.types}
        data = {i: self._small[i] for i in inputs if i in self._small}
        schema = onnx.defs.get_schema(op, OPSET, "")
        try:
            inferred = shape_inference.infer_node_outputs(schema, node, known, data, opset_imports=_OPSETS)
        except Exception as err:  # onnx raises InferenceError and others; name the node in the message
            raise ValueError(f"{op} node {name!r}: {err}") from None
        for out, tp in inferred.items():
            self.types[out] = tp

    def shape(self, name: str) -> tuple[int | None, ...]:
        """The static shape of ``name`` (None for unknown dimensions)."""
        tp = self.types.get(name)
        if tp is None or not tp.tensor_type.HasField("shape"):
            raise KeyError(name)
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim)

    def model(self, outputs: Sequence[str], graph_name: str, producer: str = "int8kit") -> onnx.ModelProto:
        """Assemble the ONNX model with ``outputs`` as graph outputs."""
        used = {i for n in self.nodes for i in n.input} | set(outputs)
        inits = [t for n, t in self.initializers.items() if n in used]
        outs = []
        for name in outputs:
            tp = self.types.get(name)
            elem = tp.tensor_type.elem_type if tp is not None else TensorProto.FLOAT
            shape = list(self.shape(name)) if tp is not None and tp.tensor_type.HasField("shape") else None
            outs.append(helper.make_tensor_value_info(name, elem, shape))
        graph = helper.make_graph(self.nodes, graph_name or "caffe", self.inputs, outs, inits)
        model = helper.make_model(graph, opset_imports=_OPSETS, producer_name=producer)
        model.ir_version = 8
        return model
