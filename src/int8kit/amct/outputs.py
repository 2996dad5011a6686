"""The file set ``save_model`` and ``convert_model`` write, as one unit (all files or none):

* ``<prefix>_fake_quant_model.onnx``: QDQ ONNX (accuracy simulation; onnxruntime runs it with INT8 kernels);
* ``<prefix>_deploy_model.onnx``: the same with every INT8 convolution a QLinearConv (amct/deploy.py);
* ``<prefix>_quant.json``: which quantized node came from which original layers, fusions and tensors;
* ``<prefix>_quant_param_record.txt``: the record (ScaleOffsetRecord text);
* for a Caffe model, ``<prefix>_fused_model.prototxt`` / ``.caffemodel``: the FP32 network fused as
  the record assumes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import Message

from int8kit import __version__
from int8kit.amct.caffe_files import fused_caffe
from int8kit.amct.deploy import to_deploy
from int8kit.amct.record import write_record
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import ConfigError
from int8kit.graph.io import check_outputs, outputs_together, save_model, write_bytes_atomic, write_text_atomic
from int8kit.plan.types import QuantPlan

log = logging.getLogger("int8kit.amct")
SAVE_TYPES = ("Fakequant", "Deploy", "Both")


def output_names(save_path: str, save_type: str, caffe: bool) -> dict[str, Path]:
    """The files of one save, by role."""
    if save_type not in SAVE_TYPES:
        close = [t for t in SAVE_TYPES if t.lower() == str(save_type).lower()]
        raise ConfigError(f"save_type must be one of {', '.join(SAVE_TYPES)}, got {save_type!r}"
                          + (f"; did you mean '{close[0]}'?" if close else "."))
    if not isinstance(save_path, (str, Path)) or not str(save_path) or str(save_path).endswith(("/", "\\")):
        raise ConfigError(f"save_path must be a folder and a file name prefix like 'results/resnet', got {save_path!r}.")
    prefix = str(save_path)
    names = {"quant_json": Path(f"{prefix}_quant.json"), "record": Path(f"{prefix}_quant_param_record.txt")}
    if save_type in ("Fakequant", "Both"):
        names["fake"] = Path(f"{prefix}_fake_quant_model.onnx")
    if save_type in ("Deploy", "Both"):
        names["deploy"] = Path(f"{prefix}_deploy_model.onnx")
    if caffe:
        names["fused_prototxt"] = Path(f"{prefix}_fused_model.prototxt")
        names["fused_caffemodel"] = Path(f"{prefix}_fused_model.caffemodel")
    return names


def quant_info(folded: dict[str, list[str]], optimized: onnx.ModelProto, fake: onnx.ModelProto, plan: QuantPlan,
               record: Message, types: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    """For every recorded layer: its type, the original layers folded into it, the activation
    fused after it, the tensors quantized for it and the Q/DQ nodes of the fake-quant model."""
    relu_of = {x: a for a, x in plan.fused.items()}  # a fused Relu/Clip by the tensor it read
    nodes = {n.name: n for n in optimized.graph.node}
    qdq = {}
    for n in fake.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for t in list(n.input[:1]) + list(n.output):
                qdq.setdefault(t, []).append(n.name)
    layers = {}
    for e in record.record:
        node = nodes[e.key]
        outs = [nodes[relu_of[o]].output[0] if o in relu_of else o for o in node.output]
        tensors = [t for t in list(node.input) + outs if t in plan.tensors]
        act = relu_of.get(node.output[0])
        layers[e.key] = {
            "type": types.get(e.key, node.op_type),
            "original_layers": [e.key] + [f for f in folded.get(e.key, []) if "/" not in f],
            "fused_nodes": folded.get(e.key, []),
            "fused_activation": act,
            "quantized_tensors": tensors,
            "quant_nodes": sorted({q for t in tensors for q in qdq.get(t, []) + qdq.get(t + "_quantized", [])}),
        }
    return {"format": "int8kit.amct.quant", "version": 1, "tool": f"int8kit {__version__}", "layers": layers,
            "float_layers": dict(plan.float_nodes), "config": config}


def write_set(names: dict[str, Path], *, source, optimized: onnx.ModelProto, plan: QuantPlan, record: Message,
              config: dict[str, Any], inputs: dict[str, Any], extra_record: str | None = None) -> dict[str, Path]:
    """Emit the models from ``plan`` and write every file of ``names`` together (plus the record
    again at ``extra_record``, init's scale_offset_record_file)."""
    all_names = dict(names)
    if extra_record is not None:
        all_names["init_record"] = Path(extra_record)
    check_outputs({f"output '{p.name}'": p for p in all_names.values()}, inputs)
    fake = emit_qdq(optimized, plan)
    info = quant_info(source.folded, optimized, fake, plan, record, source.types, config)
    fused = fused_caffe(source.model_file, source.weights_file, optimized) if source.caffe else None
    with outputs_together(list(names.values())):  # one folder; init's record is written after, atomically
        if "fake" in names:
            save_model(fake, names["fake"])
        if "deploy" in names:
            save_model(to_deploy(fake), names["deploy"])
        write_text_atomic(names["quant_json"], json.dumps(info, indent=1) + "\n")
        write_record(record, names["record"])
        if fused is not None:
            write_text_atomic(names["fused_prototxt"], fused[0])
            write_bytes_atomic(names["fused_caffemodel"], fused[1])
    if extra_record is not None:
        write_record(record, extra_record)
    for role, path in all_names.items():
        log.info("wrote %s: %s", role.replace("_", " "), path)
    return all_names
