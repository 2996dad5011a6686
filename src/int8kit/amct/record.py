"""AMCT's quantization factor record (ScaleOffsetRecord): written from a QuantPlan, and read back
into the same QuantPlan (``convert_model``).

One record entry per layer, keyed by the layer's name (the Caffe layer name for Caffe models):

* ``scale_w`` / ``offset_w`` (0) / ``num_bits_w``: the INT8 weights of a Conv/Gemm/MatMul, one
  scale per output channel or one for the tensor;
* ``record_d``: ``scale_d`` / ``offset_d`` / ``num_bits_d`` of the layer input ``index``, with
  ``x = scale_d * (q - offset_d)`` for the signed integer ``q`` (AMCT's convention: a range starting
  at 0 has offset -128). Every quantized tensor is written once, at its first reader in graph order,
  and again at each weighted layer that reads it (so every quantized conv has its own scale_d); a
  quantized network output nothing reads is written at its producer with index ``-1 - k``
  (output ``k``; an int8kit extension, AMCT indexes inputs only).

The INT32 biases are not in the record: they follow from ``scale_d * scale_w`` (AMCT's rule), and
the weights from ``scale_w``; so the record alone rebuilds the model bit for bit.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message
from onnx import numpy_helper

from int8kit.amct.protos import ScaleOffsetRecord
from int8kit.errors import ConfigError
from int8kit.graph.io import write_bytes_atomic, write_text_atomic
from int8kit.graph.ops import BINARY, COMPUTE, FUSABLE, op_info
from int8kit.numerics import quantize
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.node_choice import fusable_activation
from int8kit.plan.params import bias_quant
from int8kit.plan.types import QuantPlan, TensorQuant


def _offset(tq: TensorQuant) -> int:
    """The signed-integer offset of an activation (AMCT's offset_d)."""
    zp = int(np.asarray(tq.zero_point).reshape(-1)[0])
    if tq.dtype == "uint8":
        return zp - 128
    if tq.dtype == "uint16":
        return zp - 32768
    return zp


def _weighted(facts: GraphFacts, node: onnx.NodeProto) -> bool:
    info = op_info(node.op_type)
    return info is not None and info.role == COMPUTE and node.input[info.weight_input] in facts.initializers


def plan_to_record(plan: QuantPlan, model: onnx.ModelProto, bits: int = 8) -> Message:
    """The record of ``plan`` (planned on ``model``, the optimized graph), in graph order."""
    facts = GraphFacts.of(model)
    entries: dict[str, Message] = {}

    def entry(layer: str) -> Message:
        if layer not in entries:
            entries[layer] = ScaleOffsetRecord.MapFiledEntry(key=layer)
        return entries[layer].value

    acts = {n: tq for n, tq in plan.tensors.items() if tq.kind == "activation"}
    written: set[str] = set()
    for node in facts.nodes:
        tq_w = plan.tensors.get(node.input[op_info(node.op_type).weight_input]) if _weighted(facts, node) else None
        for i, tensor in enumerate(node.input):
            if tensor in acts and (tensor not in written or tq_w is not None):
                _add_d(entry(node.name), acts[tensor], i, bits)
                written.add(tensor)
        if tq_w is not None:
            rec = entry(node.name)
            rec.scale_w.extend(float(s) for s in np.asarray(tq_w.scale, np.float32).reshape(-1))
            rec.offset_w.extend([0] * np.size(tq_w.scale))
            rec.num_bits_w = 4 if tq_w.method == "snq" else 8  # SNQ: 16 levels a channel in INT8 storage
    for tensor in (t for t in acts if t not in written):  # outputs nothing reads
        node = facts.producer[tensor]
        _add_d(entry(node.name), acts[tensor], -1 - list(node.output).index(tensor), bits)
    order = {n.name: k for k, n in enumerate(facts.nodes)}
    record = ScaleOffsetRecord()
    record.record.extend(sorted(entries.values(), key=lambda e: order[e.key]))
    return record


def _add_d(rec: Message, tq: TensorQuant, index: int, bits: int) -> None:
    d = rec.record_d.add()
    d.scale_d = float(np.asarray(tq.scale, np.float32).reshape(-1)[0])
    d.offset_d = _offset(tq)
    d.index = index
    d.num_bits_d = bits


# ---------------------------------------------------------------- files


def write_record(record: Message, path: str | os.PathLike) -> Path:
    """Protobuf text for ``.txt`` (and any other suffix), binary for ``.bin``; written atomically."""
    if str(path).lower().endswith(".bin"):
        return write_bytes_atomic(path, record.SerializeToString())
    return write_text_atomic(path, text_format.MessageToString(record))


def read_record(path: str | os.PathLike) -> Message:
    """A record file (text, or binary ``.bin``), or one sentence saying why it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"record file '{p}' does not exist; pass the scale_offset_record file save_model wrote.")
    record = ScaleOffsetRecord()
    try:
        if p.suffix.lower() == ".bin":
            record.ParseFromString(p.read_bytes())
        else:
            text_format.Parse(p.read_text(encoding="utf-8"), record)
    except (text_format.ParseError, DecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"record file '{p}' is not a ScaleOffsetRecord ({err}); expected 'record {{ key: ... "
                          "value {{ ... }} }}' entries as the AMCT manual defines them.") from None
    return record


# ---------------------------------------------------------------- back into a plan


def _check_scale(layer: str, what: str, values) -> None:
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"record layer '{layer}': {what} is {v!r}; expected a positive finite scale, "
                              "fix or recompute the record.")


def _activation_tq(layer: str, tensor: str, d: Message) -> TensorQuant:
    _check_scale(layer, f"record_d index {d.index} scale_d", [d.scale_d])
    bits = d.num_bits_d if d.HasField("num_bits_d") else 8
    if not 8 <= bits <= 16:
        raise ConfigError(f"record layer '{layer}': num_bits_d must be 8 to 16, got {bits}.")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if not lo <= d.offset_d <= hi:
        raise ConfigError(f"record layer '{layer}': offset_d {d.offset_d} is outside the {bits}-bit range [{lo}, {hi}].")
    if bits <= 8:  # the grid the model stores: uint8, zero point offset + 128 (see TensorQuant.stored)
        dtype, zp = "uint8", d.offset_d + 128
    else:
        dtype, zp = ("int16", 0) if d.offset_d == 0 else ("uint16", d.offset_d + 32768)
    scale = np.asarray(d.scale_d, dtype=np.float32)
    return TensorQuant(name=tensor, kind="activation", dtype=dtype, scale=scale,
                       zero_point=np.asarray(zp, dtype=np.int32), method="record")


def _nearest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def record_to_plan(record: Message, model: onnx.ModelProto) -> QuantPlan:
    """The QuantPlan a record describes on ``model`` (the optimized graph); every inconsistency is
    one error naming the layer."""
    facts = GraphFacts.of(model)
    nodes = {n.name: n for n in facts.nodes}
    plan = QuantPlan()
    source: dict[str, str] = {}
    bits = 8
    for e in record.record:
        if e.key not in nodes:
            raise ConfigError(f"record layer '{e.key}' is not a layer of the model{_nearest(e.key, list(nodes))}"
                              " (for a Caffe model: the layer names of the fused model save_model wrote).")
        node = nodes[e.key]
        for d in e.value.record_d:
            if not -len(node.output) <= d.index < len(node.input):
                raise ConfigError(f"record layer '{e.key}': record_d index {d.index} is out of range; the layer has "
                                  f"{len(node.input)} input(s).")
            tensor = node.input[d.index] if d.index >= 0 else node.output[-1 - d.index]
            if tensor not in facts.activations:
                raise ConfigError(f"record layer '{e.key}': record_d index {d.index} is '{tensor}', which is not a "
                                  "float activation (a constant or an integer tensor); drop that record_d.")
            tq = _activation_tq(e.key, tensor, d)
            bits = max(bits, d.num_bits_d if d.HasField("num_bits_d") else 8)
            old = plan.tensors.get(tensor)
            if old is not None and (float(old.scale) != float(tq.scale) or int(old.zero_point) != int(tq.zero_point)):
                raise ConfigError(f"record layers '{source[tensor]}' and '{e.key}' give tensor '{tensor}' different "
                                  "scale_d/offset_d; make them equal.")
            plan.tensors[tensor], source[tensor] = tq, source.get(tensor, e.key)
    for e in record.record:
        if len(e.value.scale_w):
            _weights(facts, nodes[e.key], e.value, plan)
    plan.keep_activation_nodes = 8 < bits < 16
    plan.fused = _fused(facts, plan)
    return canonical(plan, model)


def _weights(facts: GraphFacts, node: onnx.NodeProto, rec: Message, plan: QuantPlan) -> None:
    """The INT8 weight and INT32 bias of one recorded layer, from scale_w and the input's scale_d."""
    name = node.name
    if not _weighted(facts, node):
        raise ConfigError(f"record layer '{name}' has scale_w but its '{node.op_type}' has no constant weight; drop "
                          "scale_w/offset_w there.")
    info = op_info(node.op_type)
    scales = list(rec.scale_w)
    _check_scale(name, "scale_w", scales)
    if any(o != 0 for o in rec.offset_w) or len(rec.offset_w) not in (0, len(scales)):
        raise ConfigError(f"record layer '{name}': offset_w must be 0 for every scale_w (weights are symmetric), "
                          f"got {list(rec.offset_w)}.")
    if rec.num_bits_w != 8:
        raise ConfigError(f"record layer '{name}': num_bits_w {rec.num_bits_w} cannot be rebuilt from a record (SNQ "
                          "4-bit weights need their cluster centres); use save_model's models.")
    w_name = node.input[info.weight_input]
    w = numpy_helper.to_array(facts.initializers[w_name]).astype(np.float32)
    axis = info.channel_axis(node, w.ndim)
    channels = w.shape[axis]
    if len(scales) not in (1, channels):
        raise ConfigError(f"record layer '{name}': scale_w has {len(scales)} values; expected 1 (per tensor) or "
                          f"{channels} (one per output channel).")
    x = plan.tensors.get(node.input[0])
    if x is None:
        raise ConfigError(f"record layer '{name}' has scale_w but no scale_d for its input '{node.input[0]}' "
                          f"(AMCT: cannot find scale_d of layer '{name}'); add its record_d index 0.")
    per_channel = len(scales) == channels
    scale = np.asarray(scales, np.float32) if per_channel else np.asarray(scales[0], np.float32)
    q = np.clip(quantize(w, scale, 0, "int8", axis=axis if per_channel else None), -127, 127).astype(np.int8)
    plan.tensors[w_name] = TensorQuant(name=w_name, kind="weight", dtype="int8", scale=scale,
                                       zero_point=np.zeros(np.shape(scale), np.int8), axis=axis if per_channel else None,
                                       method="record", values=q)
    b_in = info.bias_input
    if b_in is not None and len(node.input) > b_in and node.input[b_in]:
        b = numpy_helper.to_array(facts.initializers[node.input[b_in]]).reshape(-1)
        plan.tensors[node.input[b_in]] = bias_quant(node.input[b_in], b, float(x.scale), scale)


def canonical(plan: QuantPlan, model: onnx.ModelProto) -> QuantPlan:
    """``plan`` with its tensors in one fixed order (activations by where they are made, then each
    node's weight and bias), so a plan and its record emit byte-identical models."""
    facts = GraphFacts.of(model)
    order = [i for i in facts.graph_inputs] + [o for n in facts.nodes for o in n.output]
    order += [i for n in facts.nodes for i in n.input if i in facts.initializers]
    rank = {name: k for k, name in reversed(list(enumerate(order)))}
    plan.tensors = dict(sorted(plan.tensors.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    return plan


def _fused(facts: GraphFacts, plan: QuantPlan) -> dict[str, str]:
    """Relu/Clip nodes the planner fuses into the INT8 op before them: the op runs INT8 (weights
    or all inputs quantized), its output is not quantized but the activation's is."""
    fused = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role != FUSABLE or not node.input or node.output[0] not in plan.tensors:
            continue
        x = node.input[0]
        producer = facts.producer.get(x)
        if x in plan.tensors or producer is None or fusable_activation(facts, x, {}) is not node:
            continue
        pinfo = op_info(producer.op_type)
        if pinfo is None or pinfo.role not in (COMPUTE, BINARY):
            continue
        if pinfo.role == COMPUTE:
            w = producer.input[pinfo.weight_input]
            runs_int8 = w in plan.tensors and producer.input[0] in plan.tensors
        else:
            runs_int8 = all(i in plan.tensors for i in producer.input[:2])
        if runs_int8:
            fused[node.name] = x
    return fused
