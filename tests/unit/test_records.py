"""Record writers/readers: quant.json, calibration table, TensorRT calibration cache."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from int8kit.errors import ConfigError
from int8kit.graph.io import write_bytes_atomic
from int8kit.emit.records import (
    float_to_hex,
    hex_to_float,
    plan_from_quant_json,
    read_calibration_table,
    read_quant_json,
    read_tensorrt_cache,
    write_calibration_table,
    write_quant_json,
    write_tensorrt_cache,
)
from int8kit.plan.types import QuantPlan, TensorQuant


@pytest.fixture
def plan() -> QuantPlan:
    t = {
        "input": TensorQuant("input", "activation", "int8", np.float32(2.0 / 127), np.int8(0), None,
                             "max", lo=-2.0, hi=2.0, min=-1.9, max=2.0),
        "conv out": TensorQuant("conv out", "activation", "uint8", np.float32(6.0 / 255), np.uint8(0), None,
                                "kl", lo=0.0, hi=6.0, min=0.0, max=9.5),
        "relu:0": TensorQuant("relu:0", "activation", "int8", np.float32(0.1), np.int8(0), None,
                              "percentile", lo=-12.7, hi=3.0, min=-20.0, max=3.0),
        "conv.weight": TensorQuant("conv.weight", "weight", "int8", np.array([0.1, 0.2], np.float32),
                                   np.zeros(2, np.int8), 0, "arq", lo=-25.4, hi=25.4, min=-25.4, max=25.0),
    }
    return QuantPlan(tensors=t, fused={"relu_node": "conv out"}, float_nodes={"softmax": "user: keep float"})


ORDER = ["input", "conv.weight", "conv out", "relu:0"]


def test_quant_json_round_trip(tmp_path, plan):
    path = write_quant_json(plan, tmp_path / "quant.json", model_name="tiny", config={"method": "kl", "bins": np.int64(2048)}, order=ORDER)
    doc = read_quant_json(path)
    assert doc["model"] == "tiny" and doc["config"] == {"method": "kl", "bins": 2048}
    assert list(doc["tensors"]) == ORDER
    w = doc["tensors"]["conv.weight"]
    assert w["axis"] == 0 and w["scale"] == [float(np.float32(0.1)), float(np.float32(0.2))] and w["zero_point"] == [0, 0]
    assert doc["tensors"]["relu:0"]["threshold"] == 12.7
    assert doc["float_nodes"] == {"softmax": "user: keep float"} and doc["fused"] == {"relu_node": "conv out"}
    back = plan_from_quant_json(doc)
    for name, tq in plan.tensors.items():
        got = back.tensors[name]
        assert (got.kind, got.axis, got.method) == (tq.kind, tq.axis, tq.method)
        # dtype and zero point as the model holds them: a symmetric int8 activation as uint8 + 128
        assert got.dtype == tq.stored()[0] and got.zero_point.tolist() == tq.stored()[1].tolist()
        np.testing.assert_array_equal(got.scale, tq.scale)
        assert got.scale.dtype == np.float32 and got.scale.shape == np.shape(tq.scale)
        assert (got.lo, got.hi, got.min, got.max) == (tq.lo, tq.hi, tq.min, tq.max)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_quant_json_rejects_foreign_files(tmp_path, plan):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="not an int8kit quant record"):
        read_quant_json(bad)
    with pytest.raises(ConfigError, match="cannot be written"):
        write_quant_json(plan, tmp_path / "q.json", model_name="m", config={"x": object()})
    assert not (tmp_path / "q.json").exists()


def test_calibration_table_round_trip_and_order(tmp_path, plan):
    path = write_calibration_table(plan, tmp_path / "cali_table", order=ORDER)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# int8kit") and all(line.startswith("#") for line in lines[:3])
    body = [line for line in lines if not line.startswith("#")]
    assert [line.rsplit(maxsplit=3)[0] for line in body] == ["input", "conv out", "relu:0"]  # no weights
    table = read_calibration_table(path)
    assert table == {"input": (2.0, -1.9, 2.0), "conv out": (6.0, 0.0, 9.5), "relu:0": (12.7, -20.0, 3.0)}
    # date-free: writing twice gives identical bytes
    again = write_calibration_table(plan, tmp_path / "cali_table2", order=ORDER)
    assert again.read_bytes() == path.read_bytes()


def test_calibration_table_bad_line(tmp_path):
    p = tmp_path / "t"
    p.write_text("# header\nname 1.0 oops\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_calibration_table(p)


def test_hex_known_values():
    assert float_to_hex(1.0) == "3f800000"
    assert float_to_hex(-2.0) == "c0000000"
    assert float_to_hex(2.0**-6) == "3c800000"
    assert float_to_hex(2.0 / 127) == "3c810204"
    assert hex_to_float("3f800000") == 1.0
    assert hex_to_float("3c810204") == float(np.float32(2.0 / 127))


def test_tensorrt_cache_round_trip(tmp_path, plan):
    path = write_tensorrt_cache(plan, tmp_path / "calib.cache", order=ORDER)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "input: 3c810204"
    cache = read_tensorrt_cache(path)
    assert set(cache) == {"input", "conv out", "relu:0"}
    for name, scale in cache.items():
        assert scale == float(np.float32(plan.tensors[name].threshold / 127))


def test_tensorrt_cache_rejects_bad_header(tmp_path):
    p = tmp_path / "c"
    p.write_text("not a cache\nx: 3f800000\n")
    with pytest.raises(ConfigError, match="expected a header"):
        read_tensorrt_cache(p)


def test_quant_json_layout_is_one_line_per_tensor_and_parses_back():
    from int8kit.emit.records import _json_one_entry_per_line

    doc = {"format": "f", "version": 2, "config": {"per_channel": True, "th_params": {"p": 99.9}},
           "tensors": {"a": {"scale": [0.5, 0.25], "zero_point": [0, 0]}, "b": {"scale": 1e-3}},
           "float_nodes": {}, "fused": {"relu": "conv"}}
    text = _json_one_entry_per_line(doc)
    assert json.loads(text) == doc
    lines = text.splitlines()
    assert sum(line.lstrip().startswith(('"a":', '"b":')) for line in lines) == 2  # one line each
    assert '  "config": {"per_channel": true, "th_params": {"p": 99.9}},' in lines


def test_atomic_outputs_get_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    atomic = write_bytes_atomic(tmp_path / "atomic.bin", b"x")
    assert stat.S_IMODE(os.stat(atomic).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert atomic.read_bytes() == b"x"


def test_configs_written_with_the_old_channel_scales_name_still_load():
    from int8kit.errors import ConfigError
    from int8kit.config import QuantConfig

    raw = QuantConfig().to_dict()
    raw.pop("channel_scales")
    raw["depthwise_channel_scales"] = False
    assert QuantConfig.from_dict(raw).channel_scales is False
    raw["no_such_option"] = 1
    with pytest.raises(ConfigError, match="no_such_option"):
        QuantConfig.from_dict(raw)
