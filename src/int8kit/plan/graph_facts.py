"""Facts about a model graph that the planner needs: producers, consumers, which tensors carry
float activations, and which nodes the user's mixed-precision options keep in float."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto, numpy_helper

from int8kit.errors import ConfigError
from int8kit.graph.ops import COMPUTE, CONV, ELEMENTWISE, LOOKUPS, SHAPE_READERS, op_info
from int8kit.graph.graphview import node_inputs
from int8kit.graph.passes.linear import conv_group, node_attr  # noqa: F401  (plan modules take them from here)

_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# Image or audio inputs fed as raw samples (not ids or masks, which are int32/int64/bool).
_PIXELS = {TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16}


@dataclass
class GraphFacts:
    """Read-only views of one graph, built once per plan."""

    nodes: list[onnx.NodeProto]
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)
    graph_outputs: set[str] = field(default_factory=set)
    elem_type: dict[str, int] = field(default_factory=dict)
    activations: set[str] = field(default_factory=set)  # float tensors computed from float model inputs
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "GraphFacts":
        graph = model.graph
        facts = cls(nodes=list(graph.node))
        facts.initializers = {t.name: t for t in graph.initializer}
        facts.graph_inputs = [i.name for i in graph.input if i.name not in facts.initializers]
        facts.graph_outputs = {o.name for o in graph.output}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            if vi.type.HasField("tensor_type"):
                facts.elem_type[vi.name] = vi.type.tensor_type.elem_type
        for node in graph.node:
            for out in node.output:
                if out:
                    facts.producer[out] = node
            for inp in node_inputs(node):  # an If/Loop reading a tensor in its branches consumes it too
                facts.consumers.setdefault(inp, []).append(node)
        facts.activations = facts._float_activations()
        return facts

    def _float_activations(self) -> set[str]:
        # A tensor is an activation when it depends on a float or 8/16-bit sample model input (an
        # image fed as uint8 and cast to float in the graph) or an embedding lookup. Tensors derived
        # only from id/mask inputs (int32/int64/bool) or constants are not: their ranges are
        # data-independent and often extreme (-1e4 / -inf mask values) and must stay float.
        tainted = {n for n in self.graph_inputs if self.elem_type.get(n) in _FLOATS | _PIXELS}
        for node in self.nodes:
            if node.op_type in SHAPE_READERS:
                continue
            if node.op_type in LOOKUPS and node.input[0] in self.initializers:
                # An embedding lookup turns token ids into activations.
                if self.initializers[node.input[0]].data_type in _FLOATS:
                    tainted.add(node.output[0])
                continue
            if any(i in tainted for i in node.input if i):
                for out in node.output:
                    if out and self.elem_type.get(out, TensorProto.FLOAT) in _FLOATS | _PIXELS:
                        tainted.add(out)
        # pixels pass the taint on (a uint8 image transposed, then cast) but only floats are quantized
        return {t for t in tainted if self.elem_type.get(t, TensorProto.FLOAT) in _FLOATS}

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per facts object: derived graph facts (HardSwish forms, domains, name
        maps) that every re-plan of the same model reads. Callers must not change the value."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def node_names(self) -> set[str]:
        return {n.name for n in self.nodes}

    def scalar_input(self, node: onnx.NodeProto, index: int) -> float | None:
        """Input ``index`` of ``node`` as a number when it is a one-value initializer, else ``None``."""
        init = self.initializers.get(node.input[index]) if index < len(node.input) and node.input[index] else None
        if init is None:
            return None
        value = numpy_helper.to_array(init)
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    def is_depthwise(self, node: onnx.NodeProto) -> bool:
        if node.op_type != CONV:
            return False
        group = conv_group(node)
        w = self.initializers.get(node.input[1]) if len(node.input) > 1 else None
        return group > 1 and w is not None and w.dims[1] == 1

    def ancestors(self, node: onnx.NodeProto) -> set[str]:
        seen: set[str] = set()
        stack = [node]
        while stack:
            cur = stack.pop()
            for inp in cur.input:
                prod = self.producer.get(inp)
                if prod is not None and prod.name not in seen:
                    seen.add(prod.name)
                    stack.append(prod)
        return seen

    def descendants(self, node: onnx.NodeProto) -> set[str]:
        seen: set[str] = set()
        stack = [node]
        while stack:
            cur = stack.pop()
            for out in cur.output:
                for cons in self.consumers.get(out, []):
                    if cons.name not in seen:
                        seen.add(cons.name)
                        stack.append(cons)
        return seen

    def block_until_compute(self, node: onnx.NodeProto) -> set[str]:
        """The node and everything after it up to (not including) the next compute layer."""
        seen = {node.name}
        stack = [node]
        while stack:
            cur = stack.pop()
            for out in cur.output:
                for cons in self.consumers.get(out, []):
                    info = op_info(cons.op_type)
                    if cons.name in seen or (info is not None and info.role == COMPUTE):
                        continue
                    seen.add(cons.name)
                    stack.append(cons)
        return seen


def resolve_names(facts: GraphFacts, names: Iterable[str], option: str) -> list[onnx.NodeProto]:
    """Map layer names to nodes; an unknown name is a ConfigError with the closest match."""
    by_name = facts.memo("nodes by name", lambda: {n.name: n for n in facts.nodes})
    # Users often know a layer by its output tensor (Caffe top names); accept those too.
    out_to_node = facts.memo("nodes by output", lambda: {o: n for n in facts.nodes for o in n.output})
    found = []
    for name in names:
        node = by_name.get(name) or out_to_node.get(name)
        if node is None:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; run 'int8kit inspect MODEL' to list layer names."
            raise ConfigError(f"{option} names layer '{name}', which is not in the model{hint}")
        found.append(node)
    return found


def float_nodes(facts: GraphFacts, config) -> dict[str, str]:
    """Nodes the user's options keep in float, with the reason (for the report)."""
    out: dict[str, str] = {}
    for node in resolve_names(facts, config.fp_layers, "--fp-layers"):
        out[node.name] = "--fp-layers"
    known_types = {n.op_type for n in facts.nodes}
    for op_type in config.fp_op_types:
        if op_type not in known_types:
            raise ConfigError(
                f"--fp-op-types names op type '{op_type}', which no node of the model has; "
                f"the model's op types are: {', '.join(sorted(known_types))}."
            )
        out.update({n.name: "--fp-op-types" for n in facts.nodes if n.op_type == op_type})
    for node in resolve_names(facts, config.fp_inputs, "--fp-inputs"):
        out.update({name: "--fp-inputs" for name in facts.ancestors(node) | {node.name}})
    for node in resolve_names(facts, config.fp_outputs, "--fp-outputs"):
        out.update({name: "--fp-outputs" for name in facts.descendants(node) | {node.name}})
    for node in resolve_names(facts, config.fp_blocks, "--fp-blocks"):
        out.update({name: "--fp-blocks" for name in facts.block_until_compute(node)})
    if config.stem_float:
        stems = _stem_convs(facts)
        if not config.inputs_only:
            out.update({n.name: "stem conv on the model input (few channels: no INT8 speed-up, large accuracy cost)" for n in stems})
        # OpenVINO/TensorRT form: the stem conv runs INT8 on the image itself (its output stays float for
        # the float depthwise conv, or is quantized for an INT8 reader either way), which only they speed up:
        # EfficientNet-Lite0 in OpenVINO f32 0.434 -> 0.403 of FP32, agreement 0.946 -> 0.950 (two
        # benchmarks/bench_targets.py runs, 2026-12-05)
        out.update({n.name: "depthwise conv right after the stem conv (few channels, every later layer sees its error)"
                    for n in _stem_depthwise(facts, stems)})
    if config.accuracy_opt:
        out.update({n.name: "--accuracy-opt (depthwise)" for n in facts.nodes if facts.is_depthwise(n)})
    tensor_names = set(facts.producer) | set(facts.graph_inputs)
    node_by_name = {n.name: n for n in facts.nodes}
    for name, ov in config.overrides.items():
        if name not in node_by_name and name not in tensor_names:
            resolve_names(facts, [name], "overrides file")  # raises with a hint
        if ov.float:
            node = node_by_name.get(name) or facts.producer.get(name)
            if node is not None:
                out[node.name] = "overrides: float"
    return out


def _stem_depthwise(facts: GraphFacts, stems: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Depthwise convs fed by a stem conv through single-input elementwise ops only (Relu, HardSwish...).

    The MobileNet-family stem (conv, then depthwise) has few, very unequal channels; one INT8 scale
    for all of them leaves the small ones a handful of levels, and that error reaches every later layer.
    """
    found = []
    for stem in stems:
        tensor = stem.output[0]
        while True:
            consumers = facts.consumers.get(tensor, [])
            if len(consumers) != 1:
                break
            (node,) = consumers
            if facts.is_depthwise(node):
                found.append(node)
                break
            if node.op_type not in ELEMENTWISE or len(node.output) != 1:
                break
            tensor = node.output[0]
    return found



def _stem_convs(facts: GraphFacts) -> list[onnx.NodeProto]:
    """Convs that read a model input directly and have at most 4 input channels (RGB images).

    With so few input channels the INT8 kernel is no faster than float, while its weight
    rounding error reaches every later layer (EfficientNet-Lite0: top-1 agreement 0.918 -> 0.944).
    """
    stems = []
    for node in facts.nodes:
        if node.op_type != CONV or node.input[0] not in facts.graph_inputs:
            continue
        w = facts.initializers.get(node.input[1])
        if w is not None and len(w.dims) >= 2 and w.dims[1] * conv_group(node) <= 4:
            stems.append(node)
    return stems

