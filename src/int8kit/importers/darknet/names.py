"""OpenCV's names for the layers of a Darknet net, shared by the ONNX graph and the reference run.

OpenCV's importer names a layer's main node ``<prefix>_<i>`` (``i`` = Darknet layer index), a
batch norm after it ``bn_<i>``, and its activation ``<activation>_<i+1>`` (counted one ahead).
"""

from __future__ import annotations

from .cfg import Layer

_PREFIX = {"convolutional": "conv", "connected": "fullyConnected", "maxpool": "pool", "avgpool": "avgpool",
           "softmax": "softmax", "shortcut": "shortcut", "upsample": "upsample", "reorg": "reorg",
           "yolo": "yolo", "dropout": "identity", "cost": "identity"}


def layer_name(layer: Layer) -> str:
    """The main node of a layer (``conv_3``, ``fullyConnected_7``, ``detection_out`` for region)."""
    if layer.kind == "region":
        return "detection_out"
    if layer.kind == "route":
        single = len(layer.inputs) == 1 and layer.section.get_int("groups", 1) == 1
        return f"{'identity' if single else 'concat'}_{layer.index}"
    return f"{_PREFIX[layer.kind]}_{layer.index}"


def activation_name(layer: Layer) -> str | None:
    """The activation node after a layer, or None for ``linear``."""
    act = layer.section.get_str("activation", "linear")
    return None if act == "linear" else f"{act}_{layer.index + 1}"


def final_name(layer: Layer) -> str:
    """The tensor holding a layer's result (its activation's output when it has one)."""
    return activation_name(layer) or layer_name(layer)


def output_map(plan: list[Layer]) -> dict[str, str]:
    """{graph output: OpenCV layer with the same values}.

    Yolo and region layers become outputs carrying the raw map that feeds them (OpenCV's own
    layers decode it, so the reference reads their input); without any, the last layer is the
    output.
    """
    outputs = {layer_name(lay): final_name(plan[lay.index - 1]) for lay in plan if lay.kind in ("yolo", "region")}
    return outputs or {final_name(plan[-1]): final_name(plan[-1])}
