"""The embedded demo: a small MNIST CNN and sample images shipped inside the package.

``scripts/train_demo_model.py`` produces both assets; ``docs/demo_model.md`` says how.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from int8kit.errors import DataError

MODEL_FILE = "mnist_cnn.onnx"
SAMPLES_FILE = "mnist_samples.npz"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# The preprocessing the model was trained with; it is not part of the ONNX graph.
MEAN, STD = 0.1307, 0.3081


def _asset(name: str) -> Path:
    """Path of a packaged asset file, with a clear error when the install lacks it."""
    # The package is installed as plain files (no zip), so the traversable is a real path.
    path = Path(str(importlib.resources.files("int8kit") / "assets" / name))
    if not path.is_file():
        raise DataError(
            f"demo asset '{name}' is missing from the int8kit installation (looked in '{path.parent}'); "
            "expected it to ship with the package; reinstall int8kit."
        )
    return path


def demo_model_path() -> Path:
    """Path of the demo FP32 model (input ``image`` float32 (N,1,28,28), output ``logits`` (N,10))."""
    return _asset(MODEL_FILE)


def preprocess(images_u8: np.ndarray) -> np.ndarray:
    """uint8 MNIST images (N,1,28,28) to the model's normalised float32 input."""
    x = images_u8.astype(np.float32) / np.float32(255.0)
    return (x - np.float32(MEAN)) / np.float32(STD)


def load_demo_data() -> dict[str, np.ndarray]:
    """Preprocessed demo data.

    Returns ``{"calib": float32 (512,1,28,28), "test": float32 (1000,1,28,28),
    "test_labels": int64 (1000,)}``; calibration images come from the MNIST training set, test
    images from the test set.
    """
    with np.load(_asset(SAMPLES_FILE), allow_pickle=False) as npz:
        return {
            "calib": preprocess(npz["calib_images"]),
            "test": preprocess(npz["test_images"]),
            "test_labels": npz["test_labels"].astype(np.int64),
        }
