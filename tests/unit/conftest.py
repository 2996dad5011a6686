"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from int8kit.demo_data import demo_model_path, load_demo_data


@pytest.fixture()
def files(tmp_path):
    """A copy of the bundled MNIST model and 32 of its calibration samples: (folder, model path).

    A test file may define its own ``files`` (another sample count); pytest takes the nearer one."""
    model = tmp_path / "net.onnx"
    shutil.copy(demo_model_path(), model)
    np.save(tmp_path / "calib.npy", load_demo_data()["calib"][:32])
    return tmp_path, model
