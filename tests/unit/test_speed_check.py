"""quantize ends by timing INT8 against FP32 and names what costs time when INT8 is not faster."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import int8kit
import int8kit.analysis.speed as speed
from int8kit.cli import main


def test_quantize_reports_the_latency_ratio(files, capsys):
    root, model = files
    result = int8kit.quantize(model, root / "calib.npy", output_dir=root / "o", progress=False)
    assert result.speed is not None and result.speed.fp32_ms > 0 and result.speed.int8_ms > 0 and result.speed.runs >= 3
    assert int8kit.quantize(model, root / "calib.npy", output_dir=root / "p", progress=False,
                            check_latency=False).speed is None
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "c"), "--no-progress"]) == 0
    assert "INT8/FP32 latency" in capsys.readouterr().out


def test_a_slower_int8_model_is_said_to_be_slower_with_its_costs(files, monkeypatch, caplog):
    root, model = files
    monkeypatch.setattr(speed, "measure_latencies", lambda sessions, feed, **kw: [1.0, 1.3])  # as if INT8 were slower
    with caplog.at_level(logging.WARNING):
        result = int8kit.quantize(model, root / "calib.npy", output_dir=root / "o", fp_layers="/fc/Gemm", progress=False)
    assert result.speed.ratio == pytest.approx(1.3) and not result.speed.faster
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "not faster than FP32" in warning and "1 by --fp-layers" in warning and "per-channel steps" in warning
    assert "--profile shows where the time goes" in warning  # onnxruntime's own account, one command away


def test_costs_name_channel_steps_kept_activations_and_ops_without_kernels(files):
    root, model = files
    signed = int8kit.quantize(model, root / "calib.npy", output_dir=None, signed_activations=True, progress=False,
                              check_latency=False)
    costs = speed.time_costs(signed.model, signed.plan)
    assert any("Relu/Clip are kept as nodes" in c for c in costs)
    plain = int8kit.quantize(model, root / "calib.npy", output_dir=None, progress=False, check_latency=False)
    assert not any("kept as nodes" in c for c in speed.time_costs(plain.model, plain.plan))


def test_a_one_shot_stream_of_a_dynamic_model_is_not_timed_but_a_fixed_model_gets_random_data(files):
    root, model = files
    x = np.load(root / "calib.npy")
    result = int8kit.quantize(model, iter([{"image": x}]), output_dir=None, progress=False)
    assert result.speed is not None  # the demo model has fixed sizes: random data of its shape
    feed = speed.timing_feed(result.optimized_model, None)
    assert feed is not None and next(iter(feed.values())).shape[0] == 1
