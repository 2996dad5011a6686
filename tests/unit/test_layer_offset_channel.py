"""Per-layer with_offset and per_channel overrides (AMCT's with_offset and channel_wise) change
exactly the layer they name."""

from __future__ import annotations

import numpy as np
import pytest

from int8kit.calib.collect import collect
from int8kit.config import QuantConfig
from int8kit.errors import ConfigError
from int8kit.plan.planner import candidate_tensors, plan

from test_plan_emit import small_cnn


@pytest.fixture(scope="module")
def model_stats():
    model = small_cnn()
    data = np.random.default_rng(1).standard_normal((16, 6, 16, 16)).astype(np.float32)
    return model, collect(model, data, tensors=candidate_tensors(model), progress=False)


def _changed(a, b) -> set[str]:
    names = set(a.tensors) | set(b.tensors)
    out = set()
    for n in names:
        x, y = a.tensors.get(n), b.tensors.get(n)
        if x is None or y is None or x.dtype != y.dtype or not np.array_equal(x.scale, y.scale) \
                or not np.array_equal(x.zero_point, y.zero_point):
            out.add(n)
    return out


def test_with_offset_gives_one_tensor_a_zero_point(model_stats):
    model, stats = model_stats
    base = plan(model, stats, QuantConfig(skew_ratio=0.0, method_rules=False))
    assert base.tensors["x"].dtype == "int8" and int(base.tensors["x"].zero_point) == 0
    one = plan(model, stats, QuantConfig(skew_ratio=0.0, method_rules=False, overrides={"x": {"with_offset": True}}))
    assert one.tensors["x"].dtype == "uint8" and int(one.tensors["x"].zero_point) not in (0, 128)
    # only the input and the weight/bias of its reader (the bias scale follows the input scale) change
    assert _changed(base, one) <= {"x", "b1"} and "x" in _changed(base, one)
    # and the reverse: symmetric for one tensor under a global activation_offset
    glob = plan(model, stats, QuantConfig(activation_offset=True))
    back = plan(model, stats, QuantConfig(activation_offset=True, overrides={"x": {"with_offset": False}}))
    assert glob.tensors["x"].dtype == "uint8" and back.tensors["x"].dtype == "int8"
    assert _changed(glob, back) <= {"x", "b1"}


def test_per_channel_override_changes_one_layer(model_stats):
    model, stats = model_stats
    base = plan(model, stats, QuantConfig())
    assert base.tensors["w2"].axis == 0 and np.size(base.tensors["w2"].scale) == 8
    one = plan(model, stats, QuantConfig(overrides={"conv2": {"per_channel": False}}))
    assert one.tensors["w2"].axis is None and np.size(one.tensors["w2"].scale) == 1
    assert _changed(base, one) == {"w2", "b2"}
    flip = plan(model, stats, QuantConfig(per_channel=False, overrides={"conv1": {"per_channel": True}}))
    assert flip.tensors["w1"].axis == 0 and flip.tensors["w2"].axis is None


def test_override_flags_must_be_bools():
    with pytest.raises(ConfigError, match="with_offset must be true, false or null"):
        QuantConfig(overrides={"x": {"with_offset": "yes"}})
    with pytest.raises(ConfigError, match="per_channel"):
        QuantConfig(overrides={"conv1": {"per_channel": 1}})
