"""Run the original Caffe model in OpenCV dnn, the reference the ONNX conversion is compared with."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from int8kit.errors import ConfigError, ModelError
from int8kit.importers.caffe.network import _declared_inputs, load_net


class Reference:
    """The original Caffe network in OpenCV's dnn module (``cv2.dnn.readNetFromCaffe``)."""

    def __init__(self, model: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                 input_shapes=None, input_names: Sequence[str] | None = None):
        try:
            import cv2
        except ImportError:
            raise ConfigError("Comparing with Caffe needs OpenCV's dnn module; install it with "
                              "pip install 'opencv-python-headless<5'.") from None
        self._cv2 = cv2
        net, layers, _ = load_net(model, weights)
        caffe_inputs = [name for name, _ in _declared_inputs(net, layers)]
        onnx_names = list(input_names) if input_names is not None else caffe_inputs
        self.input_names = dict(zip(onnx_names, caffe_inputs))  # ONNX name -> Caffe name
        # The last layer writing each blob: OpenCV names outputs after layers, ONNX after blobs.
        self._last_writer: dict[str, str] = {}
        for layer in layers:
            for i, top in enumerate(layer.top):
                if i == 0:
                    self._last_writer[top] = layer.name
        try:
            self.net = cv2.dnn.readNetFromCaffe(str(model), None if weights is None else str(weights))
        except cv2.error as err:
            raise ModelError(f"OpenCV cannot read the Caffe model {str(model)!r}: {str(err).strip()}; "
                             "compare without --compare or check the files.") from None
        # Without fusion every layer's output is its own (no ReLU folded into the convolution before it).
        self.net.enableFusion(False)
        self.output_layers = list(self.net.getUnconnectedOutLayersNames())
        writer_to_blob = {}
        for blob, layer in self._last_writer.items():
            writer_to_blob[layer] = blob
        self.output_blobs = [writer_to_blob.get(name, name) for name in self.output_layers]

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run once: the model outputs by blob name, or the first output of each named layer."""
        unknown = set(feeds) - set(self.input_names)
        if unknown:
            raise ConfigError(f"Feeds {sorted(unknown)} are not inputs of the Caffe net; "
                              f"its inputs are {sorted(self.input_names)}.")
        for name, value in feeds.items():
            self.net.setInput(np.ascontiguousarray(value, dtype=np.float32), self.input_names[name])
        if layers is None:
            outs = self.net.forward(self.output_layers)
            return {blob: np.asarray(o) for blob, o in zip(self.output_blobs, outs)}
        known = set(self.layer_names())
        wanted = [name for name in layers if name in known]  # names OpenCV does not have are left out
        outs = self.net.forward(wanted) if wanted else []
        return {name: np.asarray(o) for name, o in zip(wanted, outs)}

    def layer_names(self) -> list[str]:
        """The Caffe layer names OpenCV can report outputs for."""
        return list(self.net.getLayerNames())
