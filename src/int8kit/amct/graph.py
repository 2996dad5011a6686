"""The ``graph`` AMCT's calls pass around: the user's model (Caffe prototxt + caffemodel, or ONNX)
as the core sees it (FP32 ONNX, optimized with AMCT's fusion settings), its quantizable layers, the
validated config and the calibration session."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from int8kit.amct.config_file import AmctSettings
from int8kit.amct.session import CalibrationSession
from int8kit.config import QuantConfig, TuneOptions
from int8kit.errors import ConfigError
from int8kit.graph.io import load_model
from int8kit.graph.ops import COMPUTE, SHARED, op_info
from int8kit.graph.optimize import optimize_model
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.node_choice import choose_nodes
from int8kit.plan.types import QuantPlan

log = logging.getLogger("int8kit.amct")
_FOLDED = re.compile(r"folded \w+ '([^']+)' into \w+ '([^']+)'")
_FUSABLE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Mul", "Add"}


def is_caffe(model_file: str | os.PathLike, weights_file: Any) -> bool:
    """Caffe for a prototxt (with its caffemodel), ONNX for a .onnx file (weights inside)."""
    suffix = Path(str(model_file)).suffix.lower()
    if suffix == ".onnx":
        if weights_file not in (None, ""):
            raise ConfigError(f"weights_file must be None for an ONNX model_file ('{model_file}' holds its weights), "
                              f"got {weights_file!r}.")
        return False
    if weights_file in (None, ""):
        raise ConfigError(f"model_file '{model_file}' is not an .onnx file, so it is read as a Caffe prototxt and needs "
                          "its weights_file (.caffemodel); got None.")
    return True


@dataclass
class Source:
    """A user's model as FP32 ONNX, with the layer types the .cfg's layer types refer to."""

    model_file: str
    weights_file: str | None
    caffe: bool
    onnx: onnx.ModelProto
    types: dict[str, str]
    folded: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, model_file: str | os.PathLike, weights_file: str | os.PathLike | None) -> "Source":
        caffe = is_caffe(model_file, weights_file)
        if caffe:
            from int8kit.importers.caffe import convert
            from int8kit.importers.caffe.proto import read_prototxt

            model = convert(str(model_file), str(weights_file))
            net = read_prototxt(model_file)
            types = {layer.name: layer.type for layer in net.layer}
        else:
            model = load_model(model_file)
            types = {}
        types = {**{n.name: n.op_type for n in model.graph.node}, **types}
        return cls(str(model_file), None if weights_file is None else str(weights_file), caffe, model, types)

    def fusable(self) -> list[str]:
        """Layers skip_fusion_layers may name: convs and the BatchNorm/Scale after them."""
        return [n.name for n in self.onnx.graph.node if n.op_type in _FUSABLE_OPS and n.name] + \
            [name for name, kind in self.types.items() if kind in ("BatchNorm", "Scale")]

    def no_fuse(self, do_fusion: bool, skip: tuple[str, ...]) -> list[str]:
        """The optimiser's ``no_fuse`` for AMCT's do_fusion / skip_fusion_layers."""
        nodes = {n.name for n in self.onnx.graph.node}
        if not do_fusion:
            return [n.name for n in self.onnx.graph.node if getattr(op_info(n.op_type), "role", None) == COMPUTE]
        out = []
        for name in skip:  # a Caffe Scale layer is two ONNX nodes: 'name/Mul' and 'name'
            out += [n for n in (name, f"{name}/Mul") if n in nodes]
        return out

    def optimize(self, do_fusion: bool = True, skip: tuple[str, ...] = ()) -> onnx.ModelProto:
        """The optimized graph; ``self.folded`` then maps each layer to the layers folded into it."""
        optimized, lines = optimize_model(self.onnx, no_fuse=self.no_fuse(do_fusion, skip))
        self.folded = {}
        for line in lines:  # the optimiser's own account: "folded BatchNormalization 'bn' into Conv 'conv'"
            m = _FOLDED.match(line)
            if m:
                self.folded.setdefault(m.group(2), []).append(m.group(1))
        return optimized


def quantizable_layers(optimized: onnx.ModelProto) -> dict[str, str]:
    """The layers config.json lists (convolutions and matrix products with constant weights the
    planner can run in INT8), in graph order, mapped to their input tensor."""
    facts = GraphFacts.of(optimized)
    chosen = choose_nodes(facts, {}, QuantPlan())
    out = {}
    for node in facts.nodes:
        info = op_info(node.op_type)
        if node.name in chosen and info is not None and info.role == COMPUTE \
                and node.input[info.weight_input] in facts.initializers:
            out[node.name] = _range_source(facts, node.input[0])
    return out


def _range_source(facts: GraphFacts, tensor: str) -> str:
    """The tensor whose range a layer's input takes: through scale-sharing ops (MaxPool, Reshape,
    Flatten...) back to the tensor they copy, where the planner reads the override."""
    for _ in range(16):
        producer = facts.producer.get(tensor)
        info = None if producer is None else op_info(producer.op_type)
        if info is None or info.role != SHARED or not producer.input or producer.input[0] not in facts.activations:
            return tensor
        tensor = producer.input[0]
    return tensor


@dataclass
class AmctGraph:
    """What ``init`` returns: everything the later calls need."""

    source: Source
    optimized: onnx.ModelProto
    settings: AmctSettings
    quant: QuantConfig
    tune: TuneOptions
    layers: dict[str, str]  # quantizable layer -> its input tensor
    config_file: str
    record_file: str
    providers: list[str]
    weights_quantized: bool = False
    activations_quantized: bool = False
    session: CalibrationSession | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def first_layer(self) -> str:
        enabled = [n for n in self.layers if n not in self.quant.fp_layers]
        return f"'{enabled[0]}'" if enabled else "(none)"
