"""Caffe files the AMCT calls write: the fused FP32 model (Conv+BatchNorm+Scale folded exactly as
the record assumes, layer names = the record's keys) and ``uninplace_model``'s prototxt.

The fused model is the original network with the folded BatchNorm/Scale layers removed and the
folded layers' weights and biases taken from int8kit's optimized graph, the very arrays the record's
scales were computed on; every other layer and blob is copied unchanged.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import numpy_helper

from int8kit.errors import ModelError
from int8kit.importers.caffe import proto
from int8kit.importers.caffe.proto import array_to_blob, blob_to_array, read_caffemodel, read_prototxt

_FOLDABLE = ("BatchNorm", "Scale")
_WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct", "DepthwiseConv")


def fused_caffe(model_file: str | os.PathLike, weights_file: str | os.PathLike, optimized: onnx.ModelProto,
                weights: dict[str, np.ndarray] | None = None) -> tuple[str, bytes]:
    """(prototxt text, caffemodel bytes) of the fused network. ``weights`` replaces weight arrays
    of the optimized graph by name (the fake-quantized weights of ``weights_quantize_model``)."""
    net, trained = read_prototxt(model_file), read_caffemodel(weights_file)
    if len(net.layers) or len(trained.layers):
        raise ModelError(f"'{model_file}' uses the old V1 'layers' format; upgrade it to 'layer' (Caffe's "
                         "upgrade_net_proto_text) to write a fused Caffe model.")
    kept_nodes = {n.name: n for n in optimized.graph.node}
    inits = {t.name: t for t in optimized.graph.initializer}

    def array(name: str) -> np.ndarray:
        if weights is not None and name in weights:
            return weights[name]
        return numpy_helper.to_array(inits[name])

    removed = {layer.name for layer in net.layer if layer.type in _FOLDABLE
               and not ({layer.name, f"{layer.name}/Mul"} & set(kept_nodes))}
    rename: dict[str, str] = {}
    out_net = proto.NetParameter()
    out_net.CopyFrom(net)
    del out_net.layer[:]
    for layer in net.layer:
        bottoms = [rename.get(b, b) for b in layer.bottom]
        if layer.name in removed:
            for top, bottom in zip(layer.top, bottoms):
                rename[top] = bottom
            continue
        new = out_net.layer.add()
        new.CopyFrom(layer)
        del new.bottom[:]
        new.bottom.extend(bottoms)
    blobs = {layer.name: layer for layer in trained.layer}
    out_weights = proto.NetParameter(name=trained.name or net.name)
    for layer in out_net.layer:
        if layer.name not in blobs and not (layer.type in _WEIGHTED and layer.name in kept_nodes):
            continue
        stored = out_weights.layer.add(name=layer.name, type=layer.type)
        node = kept_nodes.get(layer.name)
        if layer.type in _WEIGHTED and node is not None and len(node.input) > 1 and node.input[1] in inits:
            w = array(node.input[1])
            if layer.type == "InnerProduct" and node.op_type == "Gemm" and not _attr(node, "transB"):
                w = w.T
            original = [blob_to_array(b) for b in blobs[layer.name].blobs] if layer.name in blobs else []
            w = w.reshape(original[0].shape) if original and original[0].size == w.size else w
            arrays = [w]
            if len(node.input) > 2 and node.input[2]:
                arrays.append(array(node.input[2]).reshape(-1))
                param = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
                param.bias_term = True
            stored.blobs.extend(array_to_blob(a) for a in arrays)
        elif layer.name not in kept_nodes and layer.type == "Normalize" and len(blobs[layer.name].blobs):
            # the optimiser moved Normalize's per-channel scale into the convs reading it (their
            # weights above carry it): the layer keeps only the L2 normalization
            scale = blob_to_array(blobs[layer.name].blobs[0])
            stored.blobs.append(array_to_blob(np.ones_like(scale)))
        elif layer.name not in kept_nodes and len(blobs[layer.name].blobs) and layer.type not in _WEIGHTED:
            raise ModelError(f"cannot write the fused Caffe model: the optimiser folded layer '{layer.name}' "
                             f"({layer.type}) into the layers after it, which Caffe cannot express; "
                             "set do_fusion false for this model.")
        else:
            stored.blobs.extend(blobs[layer.name].blobs)
    return text_format.MessageToString(out_net), out_weights.SerializeToString()


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), 0)


def uninplace(model_file: str | os.PathLike) -> str:
    """The prototxt with every in-place top renamed (``<layer>``, or ``<layer>_<k>``) and the
    readers after it following, keeping only layers without a phase or for phase TEST."""
    net = read_prototxt(model_file)
    if len(net.layers):
        raise ModelError(f"'{model_file}' uses the old V1 'layers' format; upgrade it to 'layer' first.")
    out = proto.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    current: dict[str, str] = {}
    taken = {t for layer in net.layer for t in layer.top}
    for layer in net.layer:
        if any(rule.HasField("phase") and rule.phase != proto.TEST for rule in layer.include) or \
                (layer.HasField("phase") and layer.phase != proto.TEST):
            continue
        new = out.layer.add()
        new.CopyFrom(layer)
        del new.bottom[:]
        new.bottom.extend(current.get(b, b) for b in layer.bottom)
        for k, top in enumerate(layer.top):
            if top in layer.bottom:  # in place: a blob of its own
                name = layer.name if k == 0 else f"{layer.name}_{k}"
                while name in taken:
                    name += "_uninplace"
                taken.add(name)
                new.top[k] = name
                current[top] = name
            else:
                current.pop(top, None)
    return text_format.MessageToString(out)
