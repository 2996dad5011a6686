"""Linear ops with constant weights, and how to fold a per-channel ``y * s + t`` into them.

A *linear unit* is Conv, ConvTranspose, Gemm or MatMul with a constant weight, plus for MatMul an
optional ``Add`` with a constant per-channel operand that acts as its bias. Folding BatchNorm and
Caffe-style Scale/Bias layers both reduce to ``fold_affine(unit, scale, shift)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from int8kit.graph.graphview import GraphView

_FLOAT_TYPES = (np.float16, np.float32, np.float64)


@dataclass
class LinearUnit:
    """A foldable linear op whose output ``output`` is read only by the node we fold into it."""

    node: onnx.NodeProto
    kind: str  # Conv, ConvTranspose, Gemm, MatMul
    channels: int  # output channels
    out_rank: int | None  # rank of the output tensor, when known
    channel_axis: int  # channel axis of the output (1 for conv, last for Gemm/MatMul)
    output: str
    bias_add: onnx.NodeProto | None = None  # MatMul only: Add carrying its bias

    def names(self) -> list[str]:
        """Node names making up the unit (for no_fuse checks and logs)."""
        return [self.node.name] + ([self.bias_add.name] if self.bias_add is not None else [])


def node_attr(node: onnx.NodeProto, name: str, default):
    """Attribute ``name`` of ``node``, or ``default`` when absent."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def conv_group(node: onnx.NodeProto) -> int:
    """The ``group`` attribute of a Conv/ConvTranspose (1 when absent)."""
    return int(node_attr(node, "group", 1))


def conv_input_index(shape: tuple[int, ...], group: int) -> np.ndarray:
    """Input channel read by each column ``[o, i]`` of a conv weight of ``shape`` (O, C/group, k...):
    output channel ``o`` reads ``(o // (O / group)) * C/group + i``."""
    out_channels, per_group = shape[0], shape[1]
    return (np.arange(out_channels) // (out_channels // group))[:, None] * per_group + np.arange(per_group)[None, :]


def _const_float(view: GraphView, tensor: str) -> np.ndarray | None:
    arr = view.get_array(tensor)
    if arr is None or arr.dtype.type not in _FLOAT_TYPES:
        return None
    return arr


def channel_vector(c: np.ndarray, channels: int, axis: int, out_rank: int | None) -> np.ndarray | None:
    """``c`` as a length-``channels`` vector when broadcasting it against the output acts per channel.

    ``axis`` is the channel axis (negative counts from the end). Returns ``None`` when ``c`` would
    vary along another axis or change the output's shape by broadcasting (then folding is illegal).
    """
    if out_rank is None:
        # Unknown rank is only possible for Gemm/MatMul (channel axis last); rank >= 1 always.
        if c.ndim > 1 or axis >= 0:
            return None
        out_rank = max(c.ndim, 1)
    if c.ndim > out_rank:
        return None
    if c.size == 1:
        return np.full(channels, c.reshape(()).item(), dtype=np.float64)
    padded = (1,) * (out_rank - c.ndim) + tuple(c.shape)
    ax = axis % out_rank
    if padded[ax] != channels or any(d != 1 for k, d in enumerate(padded) if k != ax):
        return None
    return c.reshape(-1).astype(np.float64)


def _unit_core(view: GraphView, node: onnx.NodeProto) -> LinearUnit | None:
    """Describe ``node`` as a linear unit if its weight (and bias) are constant floats."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    w = _const_float(view, node.input[1])
    if w is None:
        return None
    has_bias = len(node.input) > 2 and node.input[2]
    if has_bias and _const_float(view, node.input[2]) is None:
        return None
    out = node.output[0]
    if op == "Conv" and w.ndim >= 3:
        return LinearUnit(node, op, w.shape[0], w.ndim, 1, out)
    if op == "ConvTranspose" and w.ndim >= 3:
        return LinearUnit(node, op, w.shape[1] * conv_group(node), w.ndim, 1, out)
    if op == "Gemm" and w.ndim == 2:
        channels = w.shape[0] if node_attr(node, "transB", 0) else w.shape[1]
        return LinearUnit(node, op, channels, 2, -1, out)
    if op == "MatMul" and w.ndim == 2:
        return LinearUnit(node, op, w.shape[1], view.rank(out), -1, out)
    return None


def find_unit(view: GraphView, tensor: str) -> LinearUnit | None:
    """The linear unit producing ``tensor`` when ``tensor`` has exactly one reader, else ``None``."""
    node = view.producer(tensor)
    if node is None or view.sole_consumer(tensor) is None or node.output[0] != tensor:
        return None
    if node.op_type == "Add" and node.domain in ("", "ai.onnx"):
        return _matmul_with_bias(view, node)
    return _unit_core(view, node)


def _matmul_with_bias(view: GraphView, add: onnx.NodeProto) -> LinearUnit | None:
    """``MatMul -> Add(constant per-channel)`` seen as one unit whose bias is the Add's constant."""
    for k in (0, 1):
        act, const = add.input[k], add.input[1 - k]
        bias = _const_float(view, const)
        mm = view.producer(act)
        if bias is None or mm is None or mm.op_type != "MatMul" or view.sole_consumer(act) is not add:
            continue
        unit = _unit_core(view, mm)
        if unit is None or channel_vector(bias, unit.channels, -1, unit.out_rank) is None:
            continue
        unit.bias_add, unit.output = add, add.output[0]
        return unit
    return None


def bias_input_index(unit: LinearUnit) -> int:
    """Which input of the bias-carrying node holds the constant bias."""
    if unit.bias_add is not None:
        return 1 if unit.bias_add.input[0] == unit.node.output[0] else 0
    return 2


def fold_affine(
    view: GraphView,
    unit: LinearUnit,
    scale: np.ndarray | None,
    shift: np.ndarray | None,
    new_output: str,
) -> None:
    """Rewrite ``unit`` to compute ``unit(x) * scale + shift`` (per channel) into ``new_output``.

    ``scale``/``shift`` are length-``unit.channels`` vectors. The caller removes the folded node
    first; the unit's last node is renamed to write ``new_output``.
    """
    node = unit.node
    w = view.get_array(node.input[1])
    dtype = w.dtype
    if scale is not None:
        w = _scale_weight(unit, w.astype(np.float64), scale)
        view.write_input_constant(node, 1, w.astype(dtype))
    if unit.bias_add is not None:
        holder, idx = unit.bias_add, bias_input_index(unit)
    else:
        holder, idx = node, 2
    has_bias = len(holder.input) > idx and holder.input[idx]
    if has_bias:
        old = view.get_array(holder.input[idx]).astype(np.float64)
        if unit.kind == "Gemm":
            old = old * float(node_attr(node, "beta", 1.0))
            _set_attr(node, "beta", 1.0)
            new = old * (scale if scale is not None else 1.0) + (shift if shift is not None else 0.0)
        else:
            # Conv/ConvTranspose biases are 1-D; a MatMul bias may be (1, N), (N,) or a scalar.
            vec = old.reshape(-1) if unit.bias_add is None else channel_vector(old, unit.channels, -1, unit.out_rank)
            new = vec * (scale if scale is not None else 1.0) + (shift if shift is not None else 0.0)
            if unit.bias_add is not None:  # keep the Add's broadcast layout (channel on last axis)
                new = new.reshape((old.shape[:-1] + (unit.channels,)) if old.ndim else (unit.channels,))
        view.write_input_constant(holder, idx, new.astype(dtype))
    elif shift is not None:
        if unit.kind == "MatMul":
            _append_bias_add(view, unit, shift.astype(dtype), new_output)
            return
        if unit.kind == "Gemm":
            _set_attr(node, "beta", 1.0)
        view.write_input_constant(node, 2, shift.astype(dtype))
    last = unit.bias_add if unit.bias_add is not None else node
    view.rename_output(last, last.output[0], new_output)


def fold_unless_blocked(
    view: GraphView,
    unit: LinearUnit,
    node: onnx.NodeProto,
    scale: np.ndarray,
    shift: np.ndarray,
    no_fuse,
    log: list[str],
) -> bool:
    """Fold the affine ``node`` (BatchNormalization, Mul, Add...) into ``unit`` unless ``no_fuse``
    names either side; log what happened (once: the caller may run a pass several times)."""
    blocked = [n for n in unit.names() + [node.name] if n in no_fuse]
    if blocked:
        line = f"kept {node.op_type} '{node.name}' after {unit.kind} '{unit.node.name}' (no_fuse: {blocked[0]})"
        if line not in log:
            log.append(line)
        return False
    view.remove_node(node)
    fold_affine(view, unit, scale, shift, node.output[0])
    log.append(f"folded {node.op_type} '{node.name}' into {unit.kind} '{unit.node.name}'")
    return True


def _scale_weight(unit: LinearUnit, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Multiply the weight's output channels by ``scale``."""
    if unit.kind == "Conv":
        return w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if unit.kind == "ConvTranspose":
        # Weight is (C_in, C_out/group, k...); output channel g*C_out/group + j uses group g's rows.
        group = conv_group(unit.node)
        per = w.shape[1]
        grouped = w.reshape((group, w.shape[0] // group) + w.shape[1:])
        grouped = grouped * scale.reshape((group, 1, per) + (1,) * (w.ndim - 2))
        return grouped.reshape(w.shape)
    if unit.kind == "Gemm" and node_attr(unit.node, "transB", 0):
        return w * scale[:, None]
    return w * scale[None, :]  # Gemm without transB, MatMul: (K, N)


def _append_bias_add(view: GraphView, unit: LinearUnit, bias: np.ndarray, new_output: str) -> None:
    """Give a bias-less MatMul a new ``Add`` with constant ``bias`` that writes ``new_output``."""
    base = unit.node.name or "MatMul"
    bias_name = view.unique_name(f"{base}_bias")
    view.set_initializer(bias_name, bias)
    add = helper.make_node("Add", [unit.node.output[0], bias_name], [new_output], name=view.unique_name(f"{base}_bias_add"))
    view.insert_after(unit.node, add)


def _set_attr(node: onnx.NodeProto, name: str, value: float) -> None:
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))
