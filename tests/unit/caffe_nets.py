"""Build tiny Caffe networks (prototxt + caffemodel) in code and compare int8kit's ONNX with OpenCV.

Used by tests/unit/test_caffe_*.py; the helpers never hard-code results: OpenCV's run of the same
files (or, where OpenCV lacks a layer, a NumPy formula) is the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from int8kit.errors import ModelError
from int8kit.importers.caffe import convert, proto, reference


class CaffeNet:
    """A NetParameter under construction: inputs, layers as prototxt text, blobs as arrays."""

    def __init__(self, **inputs: tuple[int, ...]):
        self.net = proto.NetParameter(name="t")
        self.inputs = inputs
        self.weights = proto.NetParameter(name="t")
        for name, shape in inputs.items():
            layer = self.net.layer.add(name=name, type="Input", top=[name])
            layer.input_param.shape.add().dim.extend(shape)

    def add(self, type_: str, name: str, bottom, top=None, params: str = "", blobs=()) -> CaffeNet:
        bottoms = [bottom] if isinstance(bottom, str) else list(bottom)
        tops = [name] if top is None else ([top] if isinstance(top, str) else list(top))
        layer = self.net.layer.add(name=name, type=type_, bottom=bottoms, top=tops)
        if params:
            proto.parse_prototxt(params, layer)
        if blobs:
            trained = self.weights.layer.add(name=name, type=type_)
            trained.blobs.extend(proto.array_to_blob(b) for b in blobs)
        return self

    def write(self, folder: Path) -> tuple[Path, Path]:
        model, weights = folder / "deploy.prototxt", folder / "model.caffemodel"
        model.write_text(text_format.MessageToString(self.net))
        weights.write_bytes(self.weights.SerializeToString())
        return model, weights


def feeds_for(net: CaffeNet, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in net.inputs.items()}


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def run_opencv(model: Path, weights: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenCV's run of the original files (int8kit's Reference), outputs keyed by blob name."""
    cv2 = pytest.importorskip("cv2")
    try:
        return reference(model, weights).run(feeds)
    except (cv2.error, ModelError) as err:
        pytest.skip(f"OpenCV {cv2.__version__} cannot run this Caffe layer: {str(err).strip()[-160:]}")


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> float:
    """Max abs error relative to the output's scale must stay under ``rtol``; returns it."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0
    assert err <= rtol, f"max abs error {err:.3g} (relative to scale {scale:.3g})"
    return err


def check_against_opencv(net: CaffeNet, tmp_path: Path, outputs: list[str] | None = None,
                         rtol: float = 1e-4, **convert_kw) -> dict[str, np.ndarray]:
    """Convert, run in onnxruntime and in OpenCV, and compare every graph output."""
    model, weights = net.write(tmp_path)
    onnx_model = convert(model, weights, **convert_kw)
    feeds = feeds_for(net)
    got = run_onnx(onnx_model, feeds)
    names = outputs or list(got)
    want = run_opencv(model, weights, feeds)
    assert sorted(want) == sorted(got)
    for name in names:
        assert_close(got[name], want[name], rtol)
    return got
