"""The PP-OCRv4 exact-match metric written as a user plugin (benchmarks/plugins/ocr_exact.py) loads
through --metric module:Class and scores CTC outputs as documented, on a tiny (N, T, C) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.errors import DataError
from int8kit.evaluate import Evaluator, make_metric

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "benchmarks.plugins.ocr_exact"
C = 6  # classes: 0 blank, 1-4 characters, 5 space


def _model(offset: np.ndarray) -> onnx.ModelProto:
    """probs (N, 4, C) = x + offset: the 'recogniser' returns its input, shifted."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["probs"])], "ctc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, C])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4, C])],
        [numpy_helper.from_array(offset.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _steps(*classes: int) -> np.ndarray:
    out = np.zeros((4, C), np.float32)
    out[np.arange(4), classes] = 1
    return out


@pytest.fixture()
def lines(monkeypatch):
    monkeypatch.chdir(ROOT)  # module:Class resolves from the current folder, as for a user
    x = np.stack([
        _steps(1, 1, 2, 0),  # "1 2" with a repeat merged -> (1, 2)
        _steps(5, 3, 0, 5),  # spaces at both ends around 3 -> (5, 3, 5)
        _steps(4, 0, 4, 0),  # a blank between repeats keeps both -> (4, 4)
        _steps(2, 5, 2, 0),  # an inner space counts -> (2, 5, 2)
    ])
    labels = np.array([[1, 2, -1], [3, -1, -1], [4, 4, -1], [2, 2, -1]])  # the last line misses its space
    return x, labels


def test_exact_match_plugin_scores_ctc_lines(lines) -> None:
    x, labels = lines
    fp32 = _model(np.zeros((4, C)))
    ev = Evaluator(fp32, x, labels=labels, batch_size=2, cache=False, progress=False)
    exact = ev.task_score(None, f"{PLUGIN}:ExactMatch")
    assert exact.value == pytest.approx(0.75) and exact.method == "wilson"  # ends' spaces ignored, the inner one not
    # a candidate that reads step 0 as class 2 on every line: (2, 1, 2), (2, 3, 5), (2, 4), (2, 5, 2)
    shift = np.zeros((4, C))
    shift[0, 2] = 2.0  # step 0 now argmaxes to 2 on every line
    q = _model(shift)
    vs_fp32 = ev.task_score(q, f"{PLUGIN}:FP32ExactMatch")
    raw = ev.task_score(q, f"{PLUGIN}:RawFP32ExactMatch")
    assert vs_fp32.value == pytest.approx(0.25)  # only line 3 (2 5 2) decodes as FP32 does
    assert raw.value == pytest.approx(0.25)
    assert ev.task_score(None, f"{PLUGIN}:FP32ExactMatch").value == 1.0


def test_exact_match_without_labels_says_so(lines) -> None:
    x, _ = lines
    ev = Evaluator(_model(np.zeros((4, C))), x, cache=False, progress=False)
    with pytest.raises(DataError, match=r"ExactMatch needs labels .* FP32ExactMatch"):
        ev.task_score(None, make_metric(f"{PLUGIN}:ExactMatch"))
