"""Read a Darknet ``.cfg`` file into sections and work out every layer's inputs and output shape.

The rules follow Darknet itself and, where the two differ, OpenCV's ``readNetFromDarknet`` (the
reference runtime the converted model is checked against). Every problem raises ``ModelError``
naming the section type, its layer index and its line in the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from int8kit.errors import ModelError

# Darknet accepts these short section names as synonyms.
_ALIASES = {"conv": "convolutional", "conn": "connected", "max": "maxpool", "avg": "avgpool",
            "soft": "softmax", "network": "net"}
SUPPORTED = ("convolutional", "connected", "maxpool", "avgpool", "softmax", "route", "shortcut",
             "upsample", "yolo", "region", "reorg", "dropout", "cost", "crop")
# Darknet (AlexeyAB) options that change the maths and are not converted: (section, option) -> neutral value
_UNSUPPORTED_OPTIONS = {
    ("convolutional", "flipped"): "0", ("convolutional", "binary"): "0", ("convolutional", "xnor"): "0",
    ("convolutional", "antialiasing"): "0", ("convolutional", "deform"): "0", ("convolutional", "share_index"): None,
    ("maxpool", "antialiasing"): "0", ("maxpool", "maxpool_depth"): "0",
    ("shortcut", "weights_type"): "none", ("upsample", "reverse"): "0",
}
ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "tanh", "mish", "swish", "relu6", "hardswish", "elu")


@dataclass
class Section:
    """One ``[type]`` block: its options as strings, where it is and which layer it makes."""

    kind: str
    line: int
    index: int  # layer index in Darknet's numbering; -1 for [net]
    options: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def where(self) -> str:
        return f"[{self.kind}] section (layer {self.index}, line {self.line} of {self.source})"

    def get_str(self, key: str, default: str) -> str:
        return self.options.get(key, default)

    def get_int(self, key: str, default: int) -> int:
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            return int(float(raw))
        except ValueError:
            raise ModelError(f"{self.where()} has {key}={raw!r}; expected an integer, fix the cfg.") from None

    def get_float(self, key: str, default: float) -> float:
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ModelError(f"{self.where()} has {key}={raw!r}; expected a number, fix the cfg.") from None

    def get_ints(self, key: str) -> list[int]:
        raw = self.options.get(key, "")
        try:
            return [int(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise ModelError(f"{self.where()} has {key}={raw!r}; expected comma-separated integers.") from None


def parse_cfg(source: str | os.PathLike) -> tuple[Section, list[Section]]:
    """Split a ``.cfg`` file into its ``[net]`` section and the list of layer sections."""
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"Darknet cfg '{path}' does not exist or is not a file; check the path.")
    text = path.read_text(encoding="utf-8", errors="replace")
    net: Section | None = None
    layers: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"\s+", "", raw)  # Darknet and OpenCV both drop every blank inside a line
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            kind = line[1:line.index("]")] if "]" in line else line[1:]
            kind = _ALIASES.get(kind, kind)
            if kind == "net":
                current = net = Section("net", number, -1, source=path.name)
            else:
                current = Section(kind, number, len(layers), source=path.name)
                layers.append(current)
            continue
        if "=" not in line:
            raise ModelError(f"line {number} of {path.name} reads {raw.strip()!r}; expected 'key=value' or '[section]'.")
        if current is None:
            raise ModelError(f"line {number} of {path.name} sets an option before any [section]; the cfg must start with [net].")
        key, value = line.split("=", 1)
        current.options[key] = value
    if net is None:
        raise ModelError(f"Darknet cfg '{path}' has no [net] section; expected a Darknet network description.")
    if not layers:
        raise ModelError(f"Darknet cfg '{path}' has no layers after [net]; expected a Darknet network description.")
    return net, layers


@dataclass
class Layer:
    """A layer with its resolved inputs (layer indices, -1 = the image) and output shape (C, H, W)."""

    section: Section
    inputs: list[int]
    shape: tuple[int, int, int]
    flat: bool = False  # output is 2-D (N, C): after a connected layer
    cv_id: int = 0  # OpenCV's layer counter: the layer index, shifted by each earlier [crop]

    @property
    def kind(self) -> str:
        return self.section.kind

    @property
    def index(self) -> int:
        return self.section.index


def conv_dilation(sec: Section) -> int:
    """Darknet (AlexeyAB) ignores dilation for 1x1 kernels."""
    return 1 if sec.get_int("size", 1) == 1 else sec.get_int("dilation", 1)


def conv_padding(sec: Section) -> int:
    """Darknet's conv padding: ``pad=1`` means size/2, else ``padding`` (default 0); times the dilation."""
    size = sec.get_int("size", 1)
    padding = size // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
    return padding * conv_dilation(sec)


def pool_geometry(sec: Section) -> tuple[int, int, int]:
    """Darknet maxpool (size, stride, total padding); padding defaults to size-1."""
    stride = sec.get_int("stride", 1)
    size = sec.get_int("size", stride)
    return size, stride, sec.get_int("padding", size - 1)


def cv_ids_used(layer: Layer) -> int:
    """How many ids OpenCV's importer spends on a layer: a crop's [-1, 1] adjustment takes one more,
    a grouped route over n > 1 inputs takes n slices and a concat."""
    sec = layer.section
    if layer.kind == "crop" and not sec.get_int("noadjust", 0):
        return 2
    if layer.kind == "route" and sec.get_int("groups", 1) > 1 and len(layer.inputs) > 1:
        return len(layer.inputs) + 1
    return 1


def _check_options(sec: Section) -> None:
    """Refuse options that would silently change the result (non-square strides, binary weights, ...)."""
    for (kind, key), neutral in _UNSUPPORTED_OPTIONS.items():
        if sec.kind == kind and key in sec.options and sec.options[key] != neutral:
            raise ModelError(f"{sec.where()} sets {key}={sec.options[key]}, which int8kit does not convert; "
                             "remove it or convert the model another way.")
    stride = sec.options.get("stride", "1")
    for key in ("stride_x", "stride_y"):
        if key in sec.options and sec.options[key] != stride:
            raise ModelError(f"{sec.where()} sets {key}={sec.options[key]} unlike stride={stride}; "
                             "only square strides are supported.")


def _ref(sec: Section, value: int) -> int:
    """Resolve a route/shortcut layer reference (negative = relative) and check it points back."""
    target = value + sec.index if value < 0 else value
    if not 0 <= target < sec.index:
        raise ModelError(f"{sec.where()} refers to layer {value}, which resolves to {target}; "
                         f"expected an earlier layer (0..{sec.index - 1}), fix the cfg.")
    return target


def plan_layers(layers: list[Section], channels: int, height: int, width: int) -> list[Layer]:
    """Resolve inputs and output shapes of every layer for an input of (channels, height, width)."""
    out: list[Layer] = []
    shape = (channels, height, width)
    cv_id = 0
    for sec in layers:
        if sec.kind not in SUPPORTED:
            raise ModelError(f"{sec.where()} has a layer type int8kit cannot convert; supported: "
                             f"{', '.join(SUPPORTED)}. Remove it or convert the model another way.")
        act = sec.get_str("activation", "linear")
        if act not in ACTIVATIONS:
            raise ModelError(f"{sec.where()} uses activation={act!r}; supported: {', '.join(ACTIVATIONS)}.")
        _check_options(sec)
        prev = sec.index - 1
        flat = bool(out) and out[-1].flat
        inputs = [prev]
        c, h, w = shape
        kind = sec.kind
        if kind == "convolutional":
            filters, size, stride = sec.get_int("filters", 1), sec.get_int("size", 1), sec.get_int("stride", 1)
            groups, dilation = sec.get_int("groups", 1), conv_dilation(sec)
            if filters <= 0 or size <= 0 or stride <= 0 or groups <= 0 or c % groups or filters % groups:
                raise ModelError(f"{sec.where()} has filters={filters}, size={size}, stride={stride}, groups={groups} "
                                 f"on {c} input channels; expected positive values with groups dividing both.")
            pad = conv_padding(sec)
            span = dilation * (size - 1) + 1
            shape = (filters, (h + 2 * pad - span) // stride + 1, (w + 2 * pad - span) // stride + 1)
            flat = False
        elif kind == "connected":
            shape, flat = (sec.get_int("output", 1), 1, 1), True
        elif kind == "maxpool":
            size, stride, padding = pool_geometry(sec)
            shape = (c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
        elif kind == "avgpool":
            shape = (c, 1, 1)
        elif kind == "softmax":
            if sec.get_int("groups", 1) != 1:
                raise ModelError(f"{sec.where()} has groups={sec.get_int('groups', 1)}; only groups=1 is supported.")
        elif kind == "route":
            refs = sec.get_ints("layers")
            if not refs:
                raise ModelError(f"{sec.where()} has no layers=...; expected one or more layer indices.")
            inputs = [_ref(sec, r) for r in refs]
            srcs = [out[i] for i in inputs]
            if len({s.shape[1:] for s in srcs}) > 1:
                raise ModelError(f"{sec.where()} joins layers {inputs} of spatial sizes "
                                 f"{[s.shape[1:] for s in srcs]}; expected equal sizes.")
            groups, group_id = sec.get_int("groups", 1), sec.get_int("group_id", 0)
            if groups <= 0 or any(s.shape[0] % groups for s in srcs) or not 0 <= group_id < groups:
                raise ModelError(f"{sec.where()} has groups={groups}, group_id={group_id} for inputs of "
                                 f"{[s.shape[0] for s in srcs]} channels; expected groups dividing each.")
            # each input contributes its group_id-th channel group
            shape, flat = (sum(s.shape[0] for s in srcs) // groups, *srcs[0].shape[1:]), srcs[0].flat
        elif kind == "shortcut":
            frm = sec.get_ints("from")
            if len(frm) != 1:
                raise ModelError(f"{sec.where()} has from={sec.get_str('from', '')!r}; expected one layer index.")
            inputs = [prev, _ref(sec, frm[0])]
            oh, ow = out[inputs[1]].shape[1:]
            if oh < h or ow < w or oh % h or ow % w or oh // h != ow // w:
                raise ModelError(f"{sec.where()} adds layer {inputs[1]} of size {(oh, ow)} to size {(h, w)}; "
                                 "expected the same size or a whole multiple of it (Darknet then samples it).")
        elif kind == "upsample":
            stride = sec.get_int("stride", 2)
            if stride <= 0:
                raise ModelError(f"{sec.where()} has stride={stride}; only upsampling (stride >= 1) is supported.")
            shape = (c, h * stride, w * stride)
        elif kind == "reorg":
            stride = sec.get_int("stride", 2)
            if sec.get_int("reverse", 0) or c % (stride * stride) or h % stride or w % stride:
                raise ModelError(f"{sec.where()} reorganises {shape} with stride {stride}; expected a forward reorg "
                                 "with channels divisible by stride^2 and height/width by stride.")
            shape = (c * stride * stride, h // stride, w // stride)
        elif kind == "crop":
            ch, cw = sec.get_int("crop_height", 1), sec.get_int("crop_width", 1)
            if not (0 < ch <= h and 0 < cw <= w):
                raise ModelError(f"{sec.where()} crops {ch}x{cw} out of {h}x{w}; expected a crop inside the input.")
            shape = (c, ch, cw)
        if sec.index == 0 and inputs == [-1] and kind in ("route", "shortcut"):
            raise ModelError(f"{sec.where()} cannot be the first layer.")
        if min(shape) <= 0:
            raise ModelError(f"{sec.where()} gets an empty output {shape} for a {height}x{width} input; "
                             "use a larger input size.")
        out.append(Layer(sec, inputs, shape, flat, cv_id))
        cv_id += cv_ids_used(out[-1])
    return out
