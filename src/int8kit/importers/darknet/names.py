"""OpenCV's names for the layers of a Darknet net, shared by the ONNX graph and the reference run.

OpenCV's importer names a layer's main node ``<prefix>_<i>``, a batch norm after it ``bn_<i>``
and its activation ``<activation>_<i+1>`` (counted one ahead). ``i`` is the Darknet layer index,
shifted by the extra ids earlier layers took (``cfg.cv_ids_used``: a crop's ``adjust_crop_<i+1>``,
the ``slice_<i+k>`` of a grouped route over several inputs).
"""

from __future__ import annotations

from .cfg import Layer

_PREFIX = {"convolutional": "conv", "connected": "fullyConnected", "maxpool": "pool", "avgpool": "avgpool",
           "softmax": "softmax", "shortcut": "shortcut", "upsample": "upsample", "reorg": "reorg",
           "yolo": "yolo", "dropout": "identity", "cost": "identity", "crop": "crop"}


def layer_name(layer: Layer) -> str:
    """The main node of a layer (``conv_3``, ``fullyConnected_7``, ``detection_out`` for region)."""
    if layer.kind == "region":
        return "detection_out"
    if layer.kind == "route":
        n = len(layer.inputs)
        if layer.section.get_int("groups", 1) > 1:  # one slice per input, then a concat
            return f"slice_{layer.cv_id}" if n == 1 else f"concat_{layer.cv_id + n}"
        return f"{'identity' if n == 1 else 'concat'}_{layer.cv_id}"
    return f"{_PREFIX[layer.kind]}_{layer.cv_id}"


def activation_name(layer: Layer) -> str | None:
    """The activation node after a layer, or None for ``linear``."""
    act = layer.section.get_str("activation", "linear")
    return None if act == "linear" else f"{act}_{layer.cv_id + 1}"


def final_name(layer: Layer) -> str:
    """The tensor holding a layer's result (its activation's output when it has one)."""
    if activation_name(layer):
        return activation_name(layer)
    if layer.kind == "crop" and not layer.section.get_int("noadjust", 0):
        return f"adjust_crop_{layer.cv_id + 1}"
    return layer_name(layer)


def output_map(plan: list[Layer]) -> dict[str, str]:
    """{graph output: OpenCV layer with the same values}.

    Yolo and region layers become outputs carrying the raw map that feeds them (OpenCV's own
    layers decode it, so the reference reads their input); without any, the last layer is the
    output.
    """
    outputs = {layer_name(lay): final_name(plan[lay.index - 1]) for lay in plan if lay.kind in ("yolo", "region")}
    return outputs or {final_name(plan[-1]): final_name(plan[-1])}
