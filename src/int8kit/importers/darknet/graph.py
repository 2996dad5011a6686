"""Build the ONNX graph (opset 17) of a planned Darknet network with its weights.

Node and tensor names follow OpenCV's Darknet importer, so a layer has the same name in both
runtimes: ``conv_<i>``, ``bn_<i>``, ``pool_<i>``, ``avgpool_<i>``, ``fullyConnected_<i>``,
``softmax_<i>``, ``identity_<i>`` / ``concat_<i>`` (route, dropout, cost), ``shortcut_<i>``,
``upsample_<i>``, ``reorg_<i>``; an activation after layer ``i`` is ``<activation>_<i+1>``
(OpenCV counts it one ahead). Every node's output tensor carries the node's name, so a layer's
result is the tensor of the same name. ``yolo_<i>`` and ``detection_out`` (region) are Identity
nodes that expose the raw feature map feeding those layers as graph outputs (decoding is
post-processing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .cfg import Layer, conv_dilation, conv_padding, pool_geometry
from .names import activation_name, layer_name, output_map

BN_EPSILON = 1e-6  # Darknet's normalize_cpu and OpenCV's importer use .000001


@dataclass
class _Graph:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def _activation(g: _Graph, kind: str, x: str, name: str) -> str:
    """Append Darknet activation ``kind`` to tensor ``x``; return the output tensor name."""
    if kind == "linear":
        return x
    if kind == "leaky":
        return g.node("LeakyRelu", [x], name, alpha=0.1)
    simple = {"relu": "Relu", "logistic": "Sigmoid", "tanh": "Tanh", "hardswish": "HardSwish", "elu": "Elu"}
    if kind in simple:
        return g.node(simple[kind], [x], name)
    if kind == "relu6":
        return g.node("Clip", [x, g.const(f"{name}/min", np.float32(0)), g.const(f"{name}/max", np.float32(6))], name)
    if kind == "swish":
        return g.node("Mul", [x, g.node("Sigmoid", [x], f"{name}/sigmoid")], name)
    if kind == "mish":
        soft = g.node("Softplus", [x], f"{name}/softplus")
        return g.node("Mul", [x, g.node("Tanh", [soft], f"{name}/tanh")], name)
    raise AssertionError(kind)  # cfg.plan_layers validated the name


def _as_4d(g: _Graph, x: str, layer: Layer, src: Layer | None) -> str:
    """A conv after a connected layer needs (N, C, 1, 1) again."""
    if src is None or not src.flat:
        return x
    name = layer_name(layer)
    return g.node("Reshape", [x, g.const(f"{name}/as_4d_shape", np.array([0, -1, 1, 1], np.int64))], f"{name}/as_4d")


def _conv(g: _Graph, layer: Layer, x: str, blobs: dict[str, np.ndarray]) -> str:
    sec, name = layer.section, layer_name(layer)
    size, stride, dilation = sec.get_int("size", 1), sec.get_int("stride", 1), conv_dilation(sec)
    pad = conv_padding(sec)
    bn = bool(sec.get_int("batch_normalize", 0))
    inputs = [x, g.const(f"{name}/weights", blobs["weights"])]
    if not bn:
        inputs.append(g.const(f"{name}/biases", blobs["biases"]))
    y = g.node("Conv", inputs, name, kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4,
               dilations=[dilation, dilation], group=sec.get_int("groups", 1))
    return _batchnorm(g, layer, y, blobs) if bn else y


def _batchnorm(g: _Graph, layer: Layer, x: str, blobs: dict[str, np.ndarray]) -> str:
    bn = f"bn_{layer.cv_id}"
    return g.node("BatchNormalization", [x, g.const(f"{bn}/scales", blobs["scales"]),
                                         g.const(f"{bn}/biases", blobs["biases"]),
                                         g.const(f"{bn}/rolling_mean", blobs["rolling_mean"]),
                                         g.const(f"{bn}/rolling_variance", blobs["rolling_variance"])],
                  bn, epsilon=BN_EPSILON)


def _connected(g: _Graph, layer: Layer, x: str, src: Layer | None, blobs: dict[str, np.ndarray]) -> str:
    name = layer_name(layer)
    if src is None or not src.flat:
        x = g.node("Flatten", [x], f"{name}/flatten", axis=1)
    bn = bool(layer.section.get_int("batch_normalize", 0))
    inputs = [x, g.const(f"{name}/weights", blobs["weights"])]
    if not bn:
        inputs.append(g.const(f"{name}/biases", blobs["biases"]))
    y = g.node("Gemm", inputs, name, transB=1)
    return _batchnorm(g, layer, y, blobs) if bn else y


def _reorg(g: _Graph, layer: Layer, x: str, in_shape: tuple[int, int, int]) -> str:
    """Darknet's reorg as OpenCV runs it: read the (C, H, W) buffer as (C/s^2, H*s, W*s) blocks.

    out[(oy*s + ox)*C/s^2 + c, y, x] = in_flat as (C/s^2, H*s, W*s)[c, y*s + oy, x*s + ox]:
    Reshape to (N, C/s^2, H, s, W, s), move the two offsets to the front, then the output shape.
    """
    s = layer.section.get_int("stride", 2)
    c, h, w = in_shape
    name = layer_name(layer)
    six = g.node("Reshape", [x, g.const(f"{name}/blocks_shape", np.array([0, c // (s * s), h, s, w, s], np.int64))],
                 f"{name}/blocks")
    moved = g.node("Transpose", [six], f"{name}/transpose", perm=[0, 3, 5, 1, 2, 4])
    return g.node("Reshape", [moved, g.const(f"{name}/shape", np.array([0, *layer.shape], np.int64))], name)


def _slice(g: _Graph, x: str, name: str, starts: list[int], ends: list[int], axes: list[int],
           steps: list[int] | None = None) -> str:
    consts = [g.const(f"{name}/{key}", np.array(v, np.int64))
              for key, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)) if v is not None]
    return g.node("Slice", [x, *consts], name)


def _route(g: _Graph, layer: Layer, srcs: list[str], channels: list[int]) -> str:
    """Identity or channel Concat; with ``groups`` each input first gives its ``group_id``-th slice."""
    name, sec = layer_name(layer), layer.section
    groups, gid = sec.get_int("groups", 1), sec.get_int("group_id", 0)
    if groups > 1:
        parts = [c // groups for c in channels]
        srcs = [_slice(g, x, name if len(srcs) == 1 else f"slice_{layer.cv_id + k}", [gid * p], [(gid + 1) * p], [1])
                for k, (x, p) in enumerate(zip(srcs, parts))]
        if len(srcs) == 1:
            return srcs[0]
    if len(srcs) == 1:
        return g.node("Identity", srcs, name)
    return g.node("Concat", srcs, name, axis=1)


def _crop(g: _Graph, layer: Layer, x: str, in_shape: tuple[int, int, int]) -> str:
    """Darknet's test-time crop: the centre window, then x*2-1 unless ``noadjust=1``."""
    _, h, w = in_shape
    _, ch, cw = layer.shape
    top, left = (h - ch) // 2, (w - cw) // 2
    y = _slice(g, x, layer_name(layer), [top, left], [top + ch, left + cw], [2, 3])
    if layer.section.get_int("noadjust", 0):
        return y
    name = f"adjust_crop_{layer.cv_id + 1}"
    doubled = g.node("Mul", [y, g.const(f"{name}/scale", np.float32(2))], f"{name}/mul")
    return g.node("Add", [doubled, g.const(f"{name}/shift", np.float32(-1))], name)


def _shortcut(g: _Graph, layer: Layer, a: str, b: str, ca: int, shape_b: tuple[int, int, int]) -> str:
    """Sum with OpenCV's channel rule: the result has the channels of the previous layer (input 0).

    A larger ``from`` map (Darknet's ResNet cfgs) is sampled every k-th pixel, as Darknet does.
    """
    name = layer_name(layer)
    cb = shape_b[0]
    step = shape_b[1] // layer.shape[1]
    if step > 1:
        b = _slice(g, b, f"{name}/sample", [0, 0], list(shape_b[1:]), [2, 3], [step, step])
    if cb > ca:
        b = _slice(g, b, f"{name}/truncate", [0], [ca], [1])
    elif cb < ca:
        b = g.node("Pad", [b, g.const(f"{name}/pads", np.array([0, 0, 0, 0, 0, ca - cb, 0, 0], np.int64))],
                   f"{name}/pad")
    alpha = layer.section.get_float("alpha", 1.0)
    if alpha != 1.0:
        a = g.node("Mul", [a, g.const(f"{name}/alpha_value", np.float32(alpha))], f"{name}/alpha")
    return g.node("Add", [a, b], name)


def build_graph(plan: list[Layer], weights: dict[int, dict[str, np.ndarray]], input_name: str,
                input_shape: list[int | str]) -> tuple[onnx.GraphProto, dict[str, str]]:
    """Return the ONNX graph and, per graph output, the OpenCV layer whose output it equals."""
    g = _Graph()
    tensors: list[str] = []
    for layer in plan:
        idx, sec = layer.index, layer.section
        src = plan[idx - 1] if idx else None
        x = tensors[-1] if idx else input_name
        in_shape = src.shape if src else tuple(int(v) for v in input_shape[1:])
        kind, name = layer.kind, layer_name(layer)
        if kind == "convolutional":
            y = _conv(g, layer, _as_4d(g, x, layer, src), weights[idx])
        elif kind == "connected":
            y = _connected(g, layer, x, src, weights[idx])
        elif kind == "maxpool":
            size, stride, padding = pool_geometry(sec)
            lo = padding // 2  # Darknet shifts the window by -padding/2; the rest pads the far side
            y = g.node("MaxPool", [x], name, kernel_shape=[size, size], strides=[stride, stride],
                       pads=[lo, lo, padding - lo, padding - lo])
        elif kind == "avgpool":
            y = g.node("GlobalAveragePool", [x], name)
        elif kind == "softmax":
            y = g.node("Softmax", [x], name, axis=1)
        elif kind == "route":
            y = _route(g, layer, [tensors[i] for i in layer.inputs], [plan[i].shape[0] for i in layer.inputs])
        elif kind in ("dropout", "cost"):
            y = g.node("Identity", [x], name)
        elif kind == "shortcut":
            y = _shortcut(g, layer, x, tensors[layer.inputs[1]], in_shape[0], plan[layer.inputs[1]].shape)
        elif kind == "upsample":
            s = float(sec.get_int("stride", 2))
            y = g.node("Resize", [x, "", g.const(f"{name}/scales", np.array([1, 1, s, s], np.float32))], name,
                       mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        elif kind == "reorg":
            y = _reorg(g, layer, x, in_shape)
        elif kind == "crop":
            y = _crop(g, layer, x, in_shape)
        elif kind in ("yolo", "region"):
            y = g.node("Identity", [x], name)  # OpenCV decodes here; we hand over the raw map
        else:  # pragma: no cover - plan_layers rejects other kinds
            raise AssertionError(kind)
        y = _activation(g, sec.get_str("activation", "linear"), y, activation_name(layer) or y)
        tensors.append(y)
    outputs = output_map(plan)
    n = input_shape[0]
    graph_inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    graph_outputs = []
    for out in outputs:
        layer = next(lay for lay in plan if out in (tensors[lay.index], layer_name(lay)))  # output -> its layer
        dims = [n, layer.shape[0]] if layer.flat else [n, *layer.shape]
        graph_outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, dims))
    graph = helper.make_graph(g.nodes, "darknet", graph_inputs, graph_outputs, g.inits)
    return graph, outputs
