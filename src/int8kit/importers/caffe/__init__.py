"""Caffe import: deploy prototxt + caffemodel to ONNX, in pure Python (no Caffe build)."""
