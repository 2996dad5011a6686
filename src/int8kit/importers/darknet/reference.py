"""Run the original Darknet model in OpenCV dnn, the reference for parity checks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from int8kit.errors import DataError, ModelError

from .cfg import parse_cfg, plan_layers
from .convert import resolve_input
from .names import output_map


class Reference:
    """OpenCV's ``readNetFromDarknet`` net, run on the same feeds as the converted ONNX model.

    ``run(feeds)`` returns the model outputs keyed by the ONNX graph output names; for ``yolo_<i>``
    and ``detection_out`` that is the raw map OpenCV's region layer decodes (its input).
    ``run(feeds, layers=[...])`` returns each named layer's first output (OpenCV layer names,
    which are also the ONNX node and tensor names; a yolo/region name again gives its raw input);
    names OpenCV does not have (helper nodes such as ``mish_3/softplus``) are left out.
    """

    def __init__(self, model: str | os.PathLike, weights: str | os.PathLike, *, input_shapes=None, input_names=None):
        try:
            import cv2
        except ImportError:
            raise ModelError("the Darknet reference needs OpenCV; pip install 'opencv-python-headless<5'.") from None
        net, sections = parse_cfg(model)
        self.input_name, self.input_shape = resolve_input(net, input_shapes, input_names)
        plan = plan_layers(sections, *(int(v) for v in self.input_shape[1:]))
        self.outputs = output_map(plan)
        try:
            self.net = cv2.dnn.readNetFromDarknet(str(model), str(weights))
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1]
            raise ModelError(f"OpenCV cannot read Darknet '{model}' ({reason}); no reference run for this cfg.") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.enableFusion(False)  # keep bn_/activation layers separate so each can be read
        self.layer_names = set(self.net.getLayerNames())

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs (``layers=None``) or the named layers' outputs for one input batch."""
        if self.input_name not in feeds:
            raise DataError(f"feeds have {sorted(feeds)}; the Darknet model's input is '{self.input_name}'.")
        x = np.ascontiguousarray(feeds[self.input_name], np.float32)
        if x.ndim != 4 or list(x.shape[1:]) != [int(v) for v in self.input_shape[1:]]:
            raise DataError(f"input '{self.input_name}' has shape {x.shape}; expected N x {self.input_shape[1:]}.")
        wanted = list(self.outputs) if layers is None else []
        if layers is not None:  # names OpenCV does not have (ONNX helper nodes) are left out
            wanted = [n for n in layers if self.outputs.get(n, n) in self.layer_names]
        sources = [self.outputs.get(name, name) for name in wanted]
        if not wanted:
            return {}
        import cv2

        self.net.setInput(x)
        try:
            values = self.net.forward(sorted(set(sources)))
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1]
            raise ModelError(f"OpenCV cannot run the Darknet net ({reason}); no reference values for it.") from None
        by_source = dict(zip(sorted(set(sources)), values))
        return {name: np.array(by_source[src]) for name, src in zip(wanted, sources)}


def reference(model: str | os.PathLike, weights: str | os.PathLike | None = None, *,
              input_shapes=None, input_names=None) -> Reference:
    """The OpenCV reference run of a Darknet cfg + weights (see :class:`Reference`)."""
    if weights is None:
        raise ModelError(f"the OpenCV reference for '{model}' needs its .weights file; pass weights=...")
    return Reference(model, weights, input_shapes=input_shapes, input_names=input_names)
