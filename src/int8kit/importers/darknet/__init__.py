"""Darknet importer: ``.cfg`` + ``.weights`` to ONNX (opset 17) in pure Python, OpenCV as the reference.

``convert(cfg, weights)`` builds the ONNX model, ``reference(cfg, weights)`` runs the original in
OpenCV dnn, ``write_weights(path, cfg, seed=0)`` writes a ``.weights`` file (random or given blobs).
"""

from .convert import convert
from .reference import Reference, reference
from .weights import read_weights, write_weights

__all__ = ["convert", "reference", "Reference", "write_weights", "read_weights"]
