"""PP-OCRv4 text recogniser (rapidocr-onnxruntime 1.4.4): INT8 greedy CTC decoding matches FP32.

Needs the rapidocr models folder in INT8KIT_RAPIDOCR_MODELS (CI exports it) or an installed
rapidocr_onnxruntime package; skips otherwise (conftest's ``ocr_rec_case``).
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

# Measured with the default kl, 128 calibration + 64 test lines (conftest's ocr_rec_case): exact match 0.84, step cosine
# 0.9889. 128 lines is bench_ocr.py's default: there four calibration sets gave 0.86-0.925 on 200
# test lines, while 64-line sets still swing 0.63-0.97 (the model sits near a cliff: floating any
# one of six early tensors lifts a bad set to 0.9), so the floor guards this fixed set at the
# recommended size, not every calibration set.
EXACT_MATCH_FLOOR = 0.80
STEP_COSINE_FLOOR = 0.985


def test_ocr_rec_int8_decodes_like_fp32(ocr_rec_case, tmp_path) -> None:
    import int8kit
    from benchmarks.bench_eval import load_npz, run_model
    from benchmarks.bench_ocr import ctc_greedy, ocr_metrics

    result = int8kit.quantize(ocr_rec_case.model_path, str(ocr_rec_case.calib_npz), output_dir=tmp_path, progress=False)
    test = load_npz(ocr_rec_case.test_npz)
    fp32 = run_model(ocr_rec_case.model_path, test)
    assert sum(len(seq) > 0 for seq in ctc_greedy(fp32)) >= 60  # the rendered lines are read as text
    metrics = ocr_metrics(fp32, run_model(result.int8_model, test))
    assert metrics["exact match"] >= EXACT_MATCH_FLOOR, metrics
    assert metrics["step cosine"] >= STEP_COSINE_FLOOR, metrics


def test_bias_tuning_rescues_a_bad_small_calibration_set(ocr_rec_case, tmp_path) -> None:
    """64 lines of seed 3 leave the recogniser at exact match 0.53 / cosine 0.962 here; moving
    each conv's bias to match FP32's output mean brings 0.89 / 0.995 (tune/bias_tuning.py)."""
    import int8kit
    from benchmarks.bench_eval import load_npz, run_model
    from benchmarks.bench_ocr import ocr_metrics
    from benchmarks.realdata_ocr import ocr_rec_case

    case = ocr_rec_case(64, 64, calib_seed=3)
    test = load_npz(case.test_npz)
    fp32 = run_model(case.model_path, test)
    plain = int8kit.quantize(case.model_path, str(case.calib_npz), output_dir=tmp_path / "plain", progress=False)
    tuned = int8kit.quantize(case.model_path, str(case.calib_npz), output_dir=tmp_path / "tuned", progress=False,
                             bias_tuning=32)
    before = ocr_metrics(fp32, run_model(plain.int8_model, test))
    after = ocr_metrics(fp32, run_model(tuned.int8_model, test))
    assert after["exact match"] >= 0.80 and after["step cosine"] >= 0.99, after
    assert after["step cosine"] > before["step cosine"], (before, after)
