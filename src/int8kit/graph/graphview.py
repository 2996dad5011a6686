"""A mutable view over an ONNX graph: who produces and who consumes each tensor.

``GraphView`` wraps a ``GraphProto`` and keeps producer/consumer maps up to date while passes
rewire tensors. Node removals and insertions are queued and written back by ``commit()``, which
keeps the node list topologically ordered (inserted nodes go right after their anchor).

Names that a node's subgraphs (If/Loop/Scan bodies) read from the outer scope count as inputs of
that node, so a tensor used only inside a subgraph is never treated as dead and renames reach it.

Typical use::

    view = GraphView(model.graph)
    for node in view.nodes_of_type("Identity"):
        view.replace_input(node.output[0], node.input[0])
        view.remove_node(node)
    view.commit()
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def outer_scope_names(graph: onnx.GraphProto) -> set[str]:
    """Tensor names that ``graph`` (and its nested subgraphs) read but do not define."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in subgraphs(node):
            used |= outer_scope_names(sub)
        defined.update(o for o in node.output if o)
    used.update(o.name for o in graph.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit non-empty inputs of ``node`` followed by names its subgraphs take from outside."""
    names = [n for n in node.input if n]
    if not node.attribute:  # most nodes (all Q/DQ): no subgraph to look into
        return names
    for sub in subgraphs(node):
        names.extend(sorted(outer_scope_names(sub) - set(names)))
    return names


def _rename_in_subgraph(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename uses of an outer-scope tensor inside ``graph``, unless the graph shadows it."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    if old in local:
        return
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for sub in subgraphs(node):
            _rename_in_subgraph(sub, old, new)
    for out in graph.output:
        if out.name == old:
            out.name = new


class GraphView:
    """Producer/consumer maps and editing helpers for one ``GraphProto`` (not its subgraphs)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self._reload()

    def _reload(self) -> None:
        # Holding the node objects keeps their ids stable for the removal/insert queues.
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self._removed: set[int] = set()
        self._inserted: dict[int, list[onnx.NodeProto]] = {}
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in self.graph.initializer}
        self.input_names: list[str] = [i.name for i in self.graph.input]
        self.output_names: list[str] = [o.name for o in self.graph.output]
        self.value_info: dict[str, onnx.ValueInfoProto] = {}
        for vi in itertools.chain(self.graph.input, self.graph.value_info, self.graph.output):
            self.value_info[vi.name] = vi
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            self._index(node)

    def _index(self, node: onnx.NodeProto) -> None:
        for out in node.output:
            if out:
                self.producers[out] = node
        for name in node_inputs(node):
            self.consumers.setdefault(name, []).append(node)

    def _unindex(self, node: onnx.NodeProto) -> None:
        for out in node.output:
            if out and self.producers.get(out) is node:
                del self.producers[out]
        for name in node_inputs(node):
            users = self.consumers.get(name, [])
            self.consumers[name] = [n for n in users if n is not node]

    # ----------------------------------------------------------------- queries
    def live_nodes(self) -> list[onnx.NodeProto]:
        """Nodes not queued for removal, in graph order (queued insertions excluded)."""
        return [n for n in self.nodes if id(n) not in self._removed]

    def nodes_of_type(self, *op_types: str) -> list[onnx.NodeProto]:
        """Live nodes of the default domain whose op type is one of ``op_types``."""
        return [n for n in self.live_nodes() if n.op_type in op_types and n.domain in ("", "ai.onnx")]

    def node_by_name(self, name: str) -> onnx.NodeProto | None:
        """The first live node called ``name``, or ``None``."""
        return next((n for n in self.live_nodes() if n.name == name), None)

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node producing ``tensor``, or ``None`` for graph inputs, initializers, unknown names."""
        return self.producers.get(tensor)

    def consumers_of(self, tensor: str) -> list[onnx.NodeProto]:
        """Nodes reading ``tensor`` (including through their subgraphs)."""
        return list(self.consumers.get(tensor, []))

    def is_graph_output(self, tensor: str) -> bool:
        """Whether ``tensor`` is one of the graph's outputs."""
        return tensor in self.output_names

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        """The single node that reads ``tensor`` when it is not also a graph output, else ``None``."""
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or self.is_graph_output(tensor):
            return None
        return users[0]

    def is_constant(self, tensor: str) -> bool:
        """Whether ``tensor`` is an initializer that is not overridable as a graph input."""
        return tensor in self.initializers and tensor not in self.input_names

    def get_array(self, tensor: str) -> np.ndarray | None:
        """The value of a constant ``tensor`` as a numpy array, or ``None`` if it is not constant."""
        if not self.is_constant(tensor):
            return None
        return numpy_helper.to_array(self.initializers[tensor])

    def rank(self, tensor: str) -> int | None:
        """The rank recorded for ``tensor`` in value_info/inputs/outputs, if known."""
        if self.is_constant(tensor):
            return len(self.initializers[tensor].dims)
        vi = self.value_info.get(tensor)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        return len(vi.type.tensor_type.shape.dim)

    def all_names(self) -> set[str]:
        """Every tensor and node name in the graph, to avoid collisions when creating new ones."""
        names = set(self.initializers) | set(self.input_names) | set(self.output_names)
        for node in self.nodes:
            names.update(node.output)
            names.add(node.name)
        for nodes in self._inserted.values():
            for node in nodes:
                names.update(node.output)
                names.add(node.name)
        return names

    def unique_name(self, base: str) -> str:
        """``base`` itself if unused in the graph, else ``base_1``, ``base_2``, ..."""
        taken = self.all_names()
        if base not in taken:
            return base
        for k in itertools.count(1):
            candidate = f"{base}_{k}"
            if candidate not in taken:
                return candidate
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- edits
    def set_initializer(self, name: str, array: np.ndarray) -> None:
        """Create or overwrite initializer ``name`` with ``array``."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        if name in self.initializers:
            self.initializers[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.initializers[name] = self.graph.initializer[-1]

    def write_input_constant(self, node: onnx.NodeProto, index: int, array: np.ndarray) -> str:
        """Give ``node``'s input ``index`` the value ``array``; returns the initializer name used.

        The existing initializer is overwritten only when ``node`` is its sole reader; a shared
        one (tied weights) is left alone and ``node`` gets a fresh copy under a new name.
        """
        while len(node.input) <= index:
            node.input.append("")
        current = node.input[index]
        if current and self.is_constant(current) and self.sole_consumer(current) is node:
            self.set_initializer(current, array)
            return current
        name = self.unique_name(f"{node.name or node.op_type}_input{index}_folded")
        self.set_initializer(name, array)
        self.set_input(node, index, name)
        return name

    def set_input(self, node: onnx.NodeProto, index: int, tensor: str) -> None:
        """Point input ``index`` of ``node`` at ``tensor``, keeping the maps in sync."""
        self._unindex(node)
        node.input[index] = tensor
        self._index(node)

    def replace_input(self, old: str, new: str) -> int:
        """Make every reader of ``old`` (including subgraphs) read ``new``; returns readers changed.

        Graph outputs are not touched: a graph output name is the model's interface.
        """
        users = self.consumers_of(old)
        for node in users:
            self._unindex(node)
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new
            for sub in subgraphs(node):
                _rename_in_subgraph(sub, old, new)
            self._index(node)
        return len(users)

    def rename_output(self, node: onnx.NodeProto, old: str, new: str) -> None:
        """Rename output ``old`` of ``node`` to ``new`` (readers of ``old`` are not changed)."""
        self._unindex(node)
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
        self._index(node)
        if old in self.value_info and new not in self.value_info:
            self.value_info.pop(old)

    def remove_node(self, node: onnx.NodeProto) -> None:
        """Queue ``node`` for removal at ``commit()``; it leaves the maps at once."""
        if id(node) not in self._removed:
            self._unindex(node)
            self._removed.add(id(node))

    def insert_after(self, anchor: onnx.NodeProto, node: onnx.NodeProto) -> None:
        """Queue ``node`` to be placed right after ``anchor`` at ``commit()``; indexed at once."""
        self._inserted.setdefault(id(anchor), []).append(node)
        self._index(node)

    def remove_initializers(self, names: Iterable[str]) -> None:
        """Drop the named initializers from the graph."""
        drop = set(names)
        if not drop:
            return
        keep = [t for t in self.graph.initializer if t.name not in drop]
        self._replace_repeated(self.graph.initializer, keep)
        self.initializers = {t.name: t for t in self.graph.initializer}

    @staticmethod
    def _replace_repeated(field, items: list) -> None:
        # Copy first: deleting from a repeated field can invalidate references into it.
        copies = []
        for item in items:
            clone = type(item)()
            clone.CopyFrom(item)
            copies.append(clone)
        del field[:]
        field.extend(copies)

    def commit(self) -> None:
        """Write queued removals/insertions into the graph and rebuild the view."""
        order: list[onnx.NodeProto] = []

        def place(node: onnx.NodeProto) -> None:
            if id(node) not in self._removed:
                order.append(node)
            # Inserted nodes follow their anchor even when the anchor itself was removed.
            for extra in self._inserted.get(id(node), []):
                place(extra)

        for node in self.nodes:
            place(node)
        self._replace_repeated(self.graph.node, order)
        self._reload()
