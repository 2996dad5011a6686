"""Constant calibration inputs are named in one warning after calibration (blank images quantize
without an error otherwise); varying data gives none."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.calib.checks import InputWatch
from int8kit.data.sources import batches_from, model_input_specs

RNG = np.random.default_rng(3)


def two_input_model() -> onnx.ModelProto:
    """logits = gemm(flatten(gap(relu(conv(x))))) * scale: an image and a per-sample factor."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
        helper.make_node("Mul", ["y", "scale"], ["logits"], name="mul"),
    ]
    inits = [
        numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal((10, 4)).astype(np.float32), "wf"),
    ]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODEL = two_input_model()
IMAGES = RNG.standard_normal((16, 3, 8, 8)).astype(np.float32)
SCALES = RNG.uniform(0.5, 2.0, (16, 1)).astype(np.float32)


def _warnings(caplog: pytest.LogCaptureFixture, data: dict[str, np.ndarray]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="int8kit"):
        int8kit.calibrate(MODEL, data, progress=False)
    return [r.getMessage() for r in caplog.records if "constant over all" in r.getMessage()]


def test_all_zero_images_are_named(caplog):
    found = _warnings(caplog, {"x": np.zeros_like(IMAGES), "scale": SCALES})
    assert len(found) == 1
    assert "'x' (always 0, all zeros)" in found[0] and "16 samples" in found[0] and "'scale'" not in found[0]


def test_one_constant_input_is_named_and_varying_data_is_not(caplog):
    found = _warnings(caplog, {"x": IMAGES, "scale": np.full_like(SCALES, 2.0)})
    assert len(found) == 1 and "input 'scale' (always 2) is constant" in found[0] and "'x'" not in found[0]
    assert _warnings(caplog, {"x": IMAGES, "scale": SCALES}) == []


def test_the_watch_sees_every_float_input_once():
    specs = model_input_specs(MODEL)
    watch = InputWatch(batches_from({"x": IMAGES, "scale": np.ones_like(SCALES)}, specs, batch_size=5), specs)
    assert sum(len(b["x"]) for b in watch) == 16 and watch.samples == 16
    assert watch.constant() == {"scale": 1.0}
