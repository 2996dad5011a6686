"""The shipped demo model and samples: present, small, runnable and accurate."""

from __future__ import annotations

import numpy as np
import onnx

from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.runtime.session import make_session


def test_assets_are_small() -> None:
    model = demo_model_path()
    samples = model.parent / "mnist_samples.npz"
    assert model.is_file() and samples.is_file()
    assert model.stat().st_size + samples.stat().st_size < 2 * 1024 * 1024


def test_demo_data_shapes_and_dtypes() -> None:
    data = load_demo_data()
    assert data["calib"].shape == (512, 1, 28, 28) and data["calib"].dtype == np.float32
    assert data["test"].shape == (1000, 1, 28, 28) and data["test"].dtype == np.float32
    assert data["test_labels"].shape == (1000,) and data["test_labels"].dtype == np.int64
    assert set(np.unique(data["test_labels"]).tolist()) == set(range(10))
    # Normalised: background pixels are (0 - 0.1307) / 0.3081.
    assert np.isclose(data["test"].min(), -0.1307 / 0.3081, atol=1e-5)


def test_demo_model_keeps_batchnorm_and_names() -> None:
    model = onnx.load(str(demo_model_path()))
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Add", "Concat", "Clip", "Gemm"} <= ops
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.opset_import[0].version == 17


def test_demo_model_accuracy() -> None:
    data = load_demo_data()
    sess = make_session(demo_model_path(), threads=1)
    logits = np.concatenate([sess.run(["logits"], {"image": data["test"][i : i + 250]})[0] for i in range(0, 1000, 250)])
    assert logits.shape == (1000, 10)
    accuracy = float(np.mean(logits.argmax(axis=1) == data["test_labels"]))
    assert accuracy >= 0.98
