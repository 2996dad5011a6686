"""Walk a Caffe network (prototxt + caffemodel) layer by layer and build the ONNX model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from int8kit.errors import ConfigError, ModelError
from int8kit.importers.caffe import layers as _layers  # noqa: F401  (registers the built-in converters)
from int8kit.importers.caffe import proto
from int8kit.importers.caffe.builder import GraphBuilder
from int8kit.importers.caffe.registry import LayerContext, converter_for
from int8kit.importers.caffe.v1 import upgrade_v1_layers

log = logging.getLogger("int8kit")

PathLike = str | os.PathLike
ShapeSpec = Mapping[str, Sequence[int]] | Sequence[int] | None
_DATA_TYPES = {"Data", "AnnotatedData", "ImageData", "MemoryData", "DummyData", "HDF5Data", "WindowData"}
_SKIPPED = {"Silence"}
_OPTIONS = {"detection_output"}
LAYER_OUTPUTS_KEY = "int8kit.caffe.layer_outputs"


def _test_phase(layer) -> bool:
    """Whether a layer belongs to the TEST phase net (include/exclude rules on phase only)."""
    def matches(rule) -> bool:
        return not rule.HasField("phase") or rule.phase == proto.TEST

    if len(layer.include) and not any(matches(r) for r in layer.include):
        return False
    return not any(matches(r) for r in layer.exclude)


def load_net(model: PathLike, weights: PathLike | None) -> tuple[proto.NetParameter, list, dict[str, list[np.ndarray]]]:
    """Read the prototxt and (optionally) the caffemodel; return the net, its TEST layers and blobs by layer."""
    net = proto.read_prototxt(model)
    layers = list(net.layer) if len(net.layer) else upgrade_v1_layers(net.layers)
    layers = [layer for layer in layers if _test_phase(layer)]
    blobs: dict[str, list[np.ndarray]] = {layer.name: [proto.blob_to_array(b) for b in layer.blobs]
                                          for layer in layers if len(layer.blobs)}
    if weights is not None:
        trained = proto.read_caffemodel(weights)
        for layer in list(trained.layer) + upgrade_v1_layers(trained.layers):
            if len(layer.blobs):
                blobs[layer.name] = [proto.blob_to_array(b) for b in layer.blobs]
    return net, layers, blobs


def _normalise_shapes(input_shapes: ShapeSpec, names: Sequence[str]) -> dict[str, list[int]]:
    if input_shapes is None:
        return {}
    if isinstance(input_shapes, Mapping):
        unknown = set(input_shapes) - set(names)
        if unknown:
            raise ConfigError(f"input_shapes names {sorted(unknown)} are not inputs of the Caffe net; "
                              f"its inputs are {list(names)}.")
        return {k: [int(d) for d in v] for k, v in input_shapes.items()}
    items = list(input_shapes)
    if items and all(isinstance(d, (int, np.integer)) for d in items):
        items = [items]  # one shape, given flat
    if len(items) != len(names):
        raise ConfigError(f"{len(items)} input shape(s) were given but the Caffe net has inputs {list(names)}; "
                          "give one shape per input, in order, or a mapping from input name to shape.")
    return {name: [int(d) for d in shape] for name, shape in zip(names, items)}


def _data_layer_shape(layer) -> list[int] | None:
    """An input shape implied by a Data layer's preprocessing (crop or resize), if any."""
    tp = layer.transform_param
    hw = None
    for op in tp.transform_op:
        if op.op == proto.TransformOp.RESIZE and op.resize_h and op.resize_w:
            hw = [op.resize_h, op.resize_w]
        elif op.op == proto.TransformOp.CROP and (op.crop_h or op.crop_size):
            hw = [op.crop_h or op.crop_size, op.crop_w or op.crop_size]
    if hw is None and (tp.crop_h or tp.crop_size):
        hw = [tp.crop_h or tp.crop_size, tp.crop_w or tp.crop_size]
    return None if hw is None else [1, 1 if tp.force_gray else 3, *hw]


def _source_shape(model: PathLike | None) -> list[int] | None:
    """The shape of the first sample of the Data layer's LMDB (after its preprocessing), if readable."""
    if model is None:
        return None
    try:
        from int8kit.data.caffe_data import caffe_data_source

        source = caffe_data_source(model)
        try:
            sample = next(iter(source), None)
        finally:
            source.close()
    except Exception as err:  # no lmdb package, no source, unreadable: the caller asks for input_shapes
        log.debug("Data layer source of %s not readable for its shape: %s", model, err)
        return None
    if sample is None:
        return None
    return [1, *next(iter(sample.inputs.values())).shape]


def _declared_inputs(net, layers, model: PathLike | None = None) -> list[tuple[str, list[int] | None]]:
    """(name, shape or None) of every network input, in order."""
    found: list[tuple[str, list[int] | None]] = []
    dims = list(net.input_dim)
    for i, name in enumerate(net.input):
        if i < len(net.input_shape):
            found.append((name, [int(d) for d in net.input_shape[i].dim]))
        elif len(dims) >= 4 * (i + 1):
            found.append((name, dims[4 * i: 4 * i + 4]))
        else:
            found.append((name, None))
    for layer in layers:
        if layer.type == "Input":
            shapes = layer.input_param.shape
            for i, top in enumerate(layer.top):
                shape = shapes[min(i, len(shapes) - 1)] if len(shapes) else None
                found.append((top, [int(d) for d in shape.dim] if shape is not None else None))
        elif layer.type in _DATA_TYPES and len(layer.top):
            found.append((layer.top[0], _data_layer_shape(layer) or _source_shape(model)))
    return found


class _Network:
    """The state of one conversion: Caffe blob name -> current ONNX tensor name."""

    def __init__(self, builder: GraphBuilder):
        self.b = builder
        self.current: dict[str, str] = {}
        self.producer: dict[str, str] = {}  # ONNX tensor -> Caffe layer that made it
        self.layer_outputs: dict[str, str] = {}

    def tensor(self, layer, blob: str) -> str:
        if blob not in self.current:
            raise ModelError(f"Caffe layer {layer.name!r} ({layer.type}) reads blob {blob!r}, which no earlier "
                             "layer or input produces; fix the bottom names in the prototxt.")
        return self.current[blob]

    def reserve(self, top: str, layer_name: str) -> str:
        # A top that exists already (in-place layer) gets a fresh, unique tensor name.
        return self.b.unique(top if top not in self.b.used else f"{top}/{layer_name}")


def convert(model: PathLike, weights: PathLike | None = None, *, input_shapes: ShapeSpec = None,
            input_names: Sequence[str] | None = None, **options) -> onnx.ModelProto:
    """Convert a Caffe deploy prototxt (+ caffemodel) into an ONNX model (opset 17).

    ``input_shapes`` overrides or supplies input shapes (a mapping name -> shape, a list with one
    shape per input in order, or one flat shape for a one-input net); ``input_names`` renames the inputs in order. Layer names become node
    names; graph outputs keep the Caffe blob names. Option ``detection_output="cut"`` leaves SSD
    DetectionOutput layers out and makes their bottoms the model outputs.
    """
    bad = set(options) - _OPTIONS
    if bad:
        raise ConfigError(f"Unknown Caffe import option(s) {sorted(bad)}; known: {sorted(_OPTIONS)}.")
    net, layers, blobs = load_net(model, weights)
    names = [n for n, _ in _declared_inputs(net, layers)]
    shapes = _normalise_shapes(input_shapes, names)
    # the Data layer's LMDB is read for its shape only when no shape was given
    declared = _declared_inputs(net, layers, None if set(names) <= set(shapes) else model)
    if input_names is not None and len(input_names) != len(declared):
        raise ConfigError(f"input_names has {len(input_names)} name(s) but the Caffe net has inputs "
                          f"{[n for n, _ in declared]}; give one name per input.")
    b = GraphBuilder()
    state = _Network(b)
    for i, (name, shape) in enumerate(declared):
        shape = shapes.get(name, shape)
        if shape is None:
            raise ModelError(f"The shape of Caffe input {name!r} is not in the prototxt; pass input_shapes "
                             f"(e.g. --input-shapes {name}:1,3,224,224).")
        onnx_name = input_names[i] if input_names is not None else name
        b.add_input(onnx_name, shape)
        state.current[name] = onnx_name
    cut = options.get("detection_output") == "cut"
    consumed: set[str] = set()
    for layer in layers:
        if layer.type in ("Input", *_DATA_TYPES) or layer.type in _SKIPPED:
            continue
        if cut and layer.type == "DetectionOutput":
            log.warning("Caffe layer %r (DetectionOutput) is cut: its inputs %s are the model outputs; "
                        "decode and NMS them in post-processing", layer.name, list(layer.bottom))
            continue
        fn = converter_for(layer.type)
        if fn is None:
            raise ModelError(f"Caffe layer {layer.name!r} has type {layer.type!r}, which int8kit cannot convert; "
                             "register a converter with @int8kit.importers.caffe.register_layer"
                             f"({layer.type!r}) (see docs/caffe.md).")
        inputs = [state.tensor(layer, bottom) for bottom in layer.bottom]
        outputs = [state.reserve(top, layer.name) for top in layer.top]
        ctx = LayerContext(b, layer, inputs, outputs, blobs.get(layer.name, []))
        try:
            result = fn(ctx)
        except (ModelError, ConfigError):
            raise
        except Exception as err:
            raise ModelError(f"Caffe layer {layer.name!r} ({layer.type}) could not be converted: {err}; "
                             "check its parameters and input shapes.") from err
        made = list(result) if result is not None else outputs
        consumed.update(t for t in inputs if t not in made)  # an alias (Dropout, Split) consumes nothing
        for top, tensor in zip(layer.top, made):
            state.current[top] = tensor
            state.producer.setdefault(tensor, layer.name)
        if made:
            state.layer_outputs[layer.name] = made[0]
    outputs = _graph_outputs(layers, state, consumed, cut)
    onnx_model = b.model([state.current[o] for o in outputs], net.name)
    _rename_outputs(onnx_model, {state.current[o]: o for o in outputs}, state.layer_outputs)
    onnx_model.metadata_props.add(key=LAYER_OUTPUTS_KEY, value=json.dumps(state.layer_outputs))
    onnx_model.doc_string = f"Converted by int8kit from Caffe {Path(model).name}"
    return onnx_model


def _graph_outputs(layers, state: _Network, consumed: set[str], cut: bool) -> list[str]:
    """Caffe blobs whose final tensor no layer reads (plus DetectionOutput bottoms when cut).

    A tensor reached under several blob names (Dropout/Split aliases) is one output, named after
    the last of them.
    """
    by_tensor: dict[str, str] = {}
    cut_bottoms = {b for layer in layers if cut and layer.type == "DetectionOutput" for b in layer.bottom}
    for layer in layers:
        if cut and layer.type == "DetectionOutput":
            for b in layer.bottom:
                by_tensor.setdefault(state.current[b], b)
            continue
        for top in layer.top:
            tensor = state.current.get(top)
            if tensor in state.producer and tensor not in consumed and top not in cut_bottoms:
                by_tensor[tensor] = top
    if not by_tensor:
        raise ModelError("The Caffe net has no output: every blob is read by a later layer; check the prototxt.")
    return list(by_tensor.values())


def _rename_outputs(model: onnx.ModelProto, mapping: dict[str, str], layer_outputs: dict[str, str]) -> None:
    """Give graph outputs their Caffe blob names; earlier tensors holding those names move aside."""
    rename = {t: blob for t, blob in mapping.items() if t != blob}
    if not rename:
        return
    taken = {n for node in model.graph.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    for blob in list(rename.values()):
        if blob in taken and blob not in rename:
            k, alt = 0, f"{blob}/pre"
            while alt in taken:
                k += 1
                alt = f"{blob}/pre{k}"
            rename[blob] = alt
    def fix(names):
        for i, n in enumerate(names):
            if n in rename:
                names[i] = rename[n]
    for node in model.graph.node:
        fix(node.input)
        fix(node.output)
    for coll in (model.graph.initializer, model.graph.input, model.graph.output, model.graph.value_info):
        for item in coll:
            item.name = rename.get(item.name, item.name)
    for layer, tensor in list(layer_outputs.items()):
        layer_outputs[layer] = rename.get(tensor, tensor)
