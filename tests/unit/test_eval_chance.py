"""FP32 accuracy near chance warns and says where the labels came from (word-named class folders
become labels 0, 1, ... in sorted order, which a 1000-class model scores at 0 %)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.evaluate.chance import chance_limit

CLASSES = 20
PREDICTED = 7  # the model below answers class 7 for every input


def constant_classifier() -> onnx.ModelProto:
    """(N, 3, 8, 8) -> gap -> flatten -> gemm (zero weights, bias peaked at PREDICTED) -> (N, 20)."""
    bias = np.zeros(CLASSES, np.float32)
    bias[PREDICTED] = 5.0
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(np.zeros((CLASSES, 3), np.float32), "w"), numpy_helper.from_array(bias, "b")]
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODEL = constant_classifier()
X = np.random.default_rng(5).uniform(0, 1, (24, 3, 8, 8)).astype(np.float32)


def _chance_warnings(caplog, data, **kw) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="int8kit"):
        result = int8kit.evaluate(MODEL, MODEL, data, latency=False, progress=False, **kw)
    assert result.fp32_top1 is not None
    return [r.getMessage() for r in caplog.records if "near chance" in r.getMessage()]


@pytest.fixture()
def word_folders(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the image folder")
    rng = np.random.default_rng(1)
    for name in ("dog", "kite"):
        (tmp_path / name).mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    return tmp_path


def test_word_class_folders_warn_and_name_the_sorted_order(caplog, word_folders):
    found = _chance_warnings(caplog, str(word_folders), preprocess="resize_h=8,resize_w=8")
    assert len(found) == 1
    assert "0.00 % on 24 samples" in found[0] and "20 classes" in found[0]
    assert "class sub-folder names" in found[0] and "sorted order (dog=0, kite=1)" in found[0]
    assert "0/, 1/" in found[0]


def test_given_labels_at_chance_name_the_labels_argument(caplog):
    found = _chance_warnings(caplog, X, labels=np.zeros(24, np.int64))
    assert len(found) == 1 and "came from --labels / labels=" in found[0]


def test_fitting_labels_and_small_sets_do_not_warn(caplog):
    assert _chance_warnings(caplog, X, labels=np.full(24, PREDICTED)) == []
    assert _chance_warnings(caplog, X[:10], labels=np.zeros(10, np.int64)) == []  # too few samples to tell


def test_chance_limit():
    assert chance_limit(1000) == pytest.approx(0.002) and chance_limit(4) == 0.25 and chance_limit(2) is None
