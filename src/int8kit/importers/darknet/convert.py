"""Darknet ``.cfg`` + ``.weights`` to an ONNX model (opset 17), in pure Python."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import helper

from int8kit.errors import ConfigError, ModelError

from .cfg import Section, parse_cfg, plan_layers
from .graph import build_graph
from .weights import blob_layout, read_weights, write_weights

OPSET = 17
DEFAULT_INPUT = "data"  # OpenCV's name for the image blob of a Darknet net


def resolve_input(net: Section, input_shapes, input_names) -> tuple[str, list[int | str]]:
    """The input name and NCHW shape: the cfg's [net] size unless ``input_shapes`` overrides it.

    ``input_shapes`` is ``{name: [N, C, H, W]}``, ``[N, C, H, W]`` or ``[(N, C, H, W)]``; a non-integer batch
    (None, -1, a string) makes the batch dimension dynamic. The default batch is dynamic.
    """
    name = DEFAULT_INPUT
    if input_names:
        names = [input_names] if isinstance(input_names, str) else list(input_names)
        if len(names) != 1:
            raise ConfigError(f"input_names has {len(names)} names; a Darknet model has exactly one input.")
        name = names[0]
    shape: list[int | str] = ["batch", net.get_int("channels", 3), net.get_int("height", 416), net.get_int("width", 416)]
    if input_shapes:
        if isinstance(input_shapes, Mapping):
            if len(input_shapes) != 1:
                raise ConfigError(f"input_shapes names {list(input_shapes)}; a Darknet model has exactly one input.")
            given_name, given = next(iter(input_shapes.items()))
            if not input_names:
                name = given_name
        else:
            given = list(input_shapes)
            if given and not isinstance(given[0], (int, str)) and given[0] is not None:  # a list of shapes
                if len(given) != 1:
                    raise ConfigError(f"input_shapes gives {len(given)} shapes; a Darknet model has exactly one input.")
                given = given[0]
        given = list(given)
        if len(given) != 4:
            raise ConfigError(f"input shape {given} has {len(given)} dimensions; expected N,C,H,W.")
        if given[1] != shape[1]:
            raise ConfigError(f"input shape {given} has {given[1]} channels; the cfg's [net] says channels={shape[1]}.")
        if any(not isinstance(v, int) or v <= 0 for v in given[2:]):
            raise ConfigError(f"input shape {given} needs positive integer height and width.")
        batch = given[0] if isinstance(given[0], int) and given[0] > 0 else "batch"
        shape = [batch, *given[1:]]
    return name, shape


def convert(model: str | os.PathLike, weights: str | os.PathLike | None = None, *,
            input_shapes: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
            input_names: Sequence[str] | str | None = None, random_weights: bool = False, seed: int = 0,
            **options) -> onnx.ModelProto:
    """Convert a Darknet ``.cfg`` (``model``) and ``.weights`` file to an ONNX model.

    ``input_shapes`` may change height/width (multiples of the net's stride) and fix the batch;
    nets with connected layers keep the cfg's size. ``random_weights=True`` (tests, smoke
    checks) writes random weights with ``seed`` instead of reading a file.
    """
    if options:
        raise ConfigError(f"unknown Darknet option(s) {sorted(options)}; known: random_weights, seed.")
    net, sections = parse_cfg(model)
    channels, height, width = net.get_int("channels", 3), net.get_int("height", 416), net.get_int("width", 416)
    if weights is None:
        if not random_weights:
            raise ModelError(f"no .weights file given for Darknet cfg '{model}'; pass the trained weights "
                             "(or random_weights=True for a smoke test).")
        with tempfile.TemporaryDirectory() as tmp:
            return convert(model, write_weights(Path(tmp) / "random.weights", model, seed=seed),
                           input_shapes=input_shapes, input_names=input_names)
    native = plan_layers(sections, channels, height, width)
    blobs = read_weights(weights, blob_layout(native, channels, height, width))
    input_name, shape = resolve_input(net, input_shapes, input_names)
    plan = plan_layers(sections, channels, int(shape[2]), int(shape[3]))
    for old, new in zip(native, plan):
        # a connected layer's weights fix its input size, so the image size cannot change
        if new.kind == "connected" and new.index and plan[new.index - 1].shape != native[new.index - 1].shape:
            raise ConfigError(f"input size {shape[2]}x{shape[3]} changes the input of [connected] layer {new.index} "
                              f"(line {new.section.line}); this net needs the cfg's {height}x{width}.")
        if new.kind == "connected" and not new.index and shape[2:] != [height, width]:
            raise ConfigError(f"input size {shape[2]}x{shape[3]} does not fit [connected] layer 0; "
                              f"this net needs the cfg's {height}x{width}.")
    graph, _ = build_graph(plan, blobs, input_name, shape)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="int8kit-darknet")
    onnx_model.ir_version = 8  # opset 17 needs IR 8; keeps the file loadable by older runtimes
    onnx.checker.check_model(onnx_model)
    return onnx_model
