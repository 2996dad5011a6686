"""The SNQ deploy form: each clustered weight as 4-bit indices plus a per-channel codebook.

The fake-quant model holds an SNQ weight as INT8 codes (``W_quantized``) that take at most 16
values per output channel. The deploy form replaces that initializer with

* ``W_quantized/snq_index``: one 4-bit index (0-15) per weight,
* ``W_quantized/snq_codebook``: the channel's 16 INT8 codes, channels one after another (int8,
  ``channels x 16``; unused entries 0),
* ``W_quantized/snq_offset``: ``16 x channel`` (int32, shaped to broadcast along the channel axis),

and a few constant nodes that rebuild ``W_quantized`` exactly::

    index ─Cast(int32)─Add(offset)─Gather(codebook)─▶ W_quantized(int8) ─DQ(scale)─▶ W ─▶ Conv

Every input is constant, so onnxruntime folds the chain at session start and then fuses
``DQ -> Conv -> Q`` into QLinearConv as in the fake-quant model: the same outputs bit for bit,
the same INT8 kernels, half the weight bytes. (A codebook is non-uniform, so DequantizeLinear on
an INT4 tensor cannot express it; a Gather can.)

The indices are stored as ONNX UINT4 (two per byte) when the model's opset is 21 or later, the
first where Cast reads 4-bit types. Older models keep their opset (raising it would change ops
whose signature moved, e.g. ReduceMean's axes in 18) and store the indices packed in uint8 bytes
instead: byte ``k`` holds index ``k`` in its low nibble and index ``k + ceil(n / 2)`` in its high
nibble; ``Mod``/``Div`` by 16, ``Concat`` and ``Slice`` unpack them.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8kit.errors import ModelError
from int8kit.plan.types import QuantPlan
from int8kit.weights.snq import LEVELS, codebook

UINT4_OPSET = 21
_SIXTEEN = "int8kit_snq/sixteen"
_ZERO = "int8kit_snq/zero"


def snq_weights(plan: QuantPlan) -> list[str]:
    """The weight tensors the plan clustered with SNQ (the ones ``int4_deploy`` packs)."""
    return [name for name, tq in plan.tensors.items() if tq.kind == "weight" and tq.method == "snq"]


def int4_deploy(model: onnx.ModelProto, weights: Collection[str]) -> onnx.ModelProto:
    """A copy of the fake-quant ``model`` with the INT8 codes of ``weights`` (float weight names,
    the outputs of their DequantizeLinear) stored as 4-bit indices and codebooks."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: k for k, t in enumerate(graph.initializer)}
    dq_of = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    uint4 = _opset(out) >= UINT4_OPSET
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    packed: set[str] = set()
    for name in weights:
        dq = dq_of.get(name)
        if dq is None or dq.input[0] not in inits:
            raise ModelError(f"weight '{name}' is not read through a DequantizeLinear of a constant in this model; "
                             "pass the fake-quant model int8kit wrote for the same plan.")
        codes = numpy_helper.to_array(graph.initializer[inits[dq.input[0]]])
        scale = numpy_helper.to_array(graph.initializer[inits[dq.input[1]]])
        axis = None if scale.size == 1 else _axis(dq, codes.ndim)
        nodes, tensors = _unpack(dq.input[0], codes, axis, uint4)
        new_nodes += nodes
        new_inits += tensors
        packed.add(dq.input[0])
    if not packed:
        return out
    kept = [t for t in graph.initializer if t.name not in packed] + new_inits
    if not uint4:  # the constants the byte unpacking reads
        kept += [numpy_helper.from_array(np.array(LEVELS, np.int32), _SIXTEEN),
                 numpy_helper.from_array(np.array([0], np.int64), _ZERO)]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = new_nodes + list(graph.node)  # constant producers first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _axis(dq: onnx.NodeProto, ndim: int) -> int:
    axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
    return axis % ndim


def _unpack(name: str, codes: np.ndarray, axis: int | None, uint4: bool) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Initializers and nodes that rebuild the int8 tensor ``name`` from indices and codebooks."""
    index, book = codebook(codes, axis)
    offset = (np.arange(book.shape[0], dtype=np.int32) * LEVELS).reshape(
        [1] * codes.ndim if axis is None else [-1 if d == axis else 1 for d in range(codes.ndim)])
    tag = f"{name}/snq"
    tensors = [numpy_helper.from_array(book.reshape(-1), f"{tag}_codebook"),
               numpy_helper.from_array(offset, f"{tag}_offset")]
    nodes = []
    if uint4:
        flat = np.concatenate([index.reshape(-1), np.zeros(index.size % 2, np.uint8)])
        pairs = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)  # ONNX: the first of two in the low nibble
        tensors.append(helper.make_tensor(f"{tag}_index", TensorProto.UINT4, index.shape, pairs.tobytes(), raw=True))
        nodes.append(helper.make_node("Cast", [f"{tag}_index"], [f"{tag}/index"], to=TensorProto.INT32))
    else:
        flat = index.reshape(-1)
        half = (flat.size + 1) // 2
        padded = np.concatenate([flat, np.zeros(2 * half - flat.size, np.uint8)])
        tensors += [numpy_helper.from_array((padded[:half] | (padded[half:] << 4)).astype(np.uint8), f"{tag}_index"),
                    numpy_helper.from_array(np.array([flat.size], np.int64), f"{tag}/count"),
                    numpy_helper.from_array(np.array(codes.shape, np.int64), f"{tag}/shape")]
        nodes += [
            helper.make_node("Cast", [f"{tag}_index"], [f"{tag}/bytes"], to=TensorProto.INT32),
            helper.make_node("Mod", [f"{tag}/bytes", _SIXTEEN], [f"{tag}/low"]),
            helper.make_node("Div", [f"{tag}/bytes", _SIXTEEN], [f"{tag}/high"]),
            helper.make_node("Concat", [f"{tag}/low", f"{tag}/high"], [f"{tag}/both"], axis=0),
            helper.make_node("Slice", [f"{tag}/both", _ZERO, f"{tag}/count"], [f"{tag}/flat"]),
            helper.make_node("Reshape", [f"{tag}/flat", f"{tag}/shape"], [f"{tag}/index"]),
        ]
    nodes += [helper.make_node("Add", [f"{tag}/index", f"{tag}_offset"], [f"{tag}/position"]),
              helper.make_node("Gather", [f"{tag}_codebook", f"{tag}/position"], [name], axis=0)]
    return nodes, tensors
