"""Darknet .cfg parsing and the .weights format: round trips, header versions, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from int8kit.errors import ConfigError, ModelError
from int8kit.importers import darknet
from int8kit.importers.darknet.cfg import parse_cfg, plan_layers
from int8kit.importers.darknet.weights import blob_layout, read_weights

NET = "[net]\nbatch=64\nwidth=8\nheight=8\nchannels=3\n"
CONV_BN = "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
CONV = "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=1\nactivation=linear\n"
CONN = "[connected]\noutput=5\nactivation=linear\n"


def _cfg(tmp_path, body: str, name: str = "net.cfg"):
    path = tmp_path / name
    path.write_text(NET + body)
    return path


def _layout(cfg):
    net, sections = parse_cfg(cfg)
    return blob_layout(plan_layers(sections, 3, 8, 8), 3, 8, 8)


def test_parse_drops_blanks_comments_and_accepts_aliases(tmp_path):
    cfg = _cfg(tmp_path, "# a comment\n; another\n[conv]\n filters = 4 \nsize=3\n\n[max]\nsize=2\nstride=2\n")
    net, layers = parse_cfg(cfg)
    assert net.get_int("width", 0) == 8
    assert [s.kind for s in layers] == ["convolutional", "maxpool"]
    assert layers[0].get_int("filters", 0) == 4 and layers[0].line == 8
    plan = plan_layers(layers, 3, 8, 8)
    assert plan[0].shape == (4, 6, 6) and plan[1].shape == (4, 3, 3)  # pad=0 conv, maxpool padding size-1


def test_unsupported_section_names_type_index_and_line(tmp_path):
    cfg = _cfg(tmp_path, CONV_BN + "[lstm]\noutput=4\n")
    with pytest.raises(ModelError, match=r"\[lstm\] section \(layer 1, line 13 of net\.cfg\)"):
        darknet.convert(cfg, random_weights=True)


def test_unknown_activation_and_bad_route_are_clear(tmp_path):
    with pytest.raises(ModelError, match="activation='plse'"):
        darknet.convert(_cfg(tmp_path, CONV_BN.replace("leaky", "plse")), random_weights=True)
    with pytest.raises(ModelError, match=r"refers to layer 3.*expected an earlier layer"):
        darknet.convert(_cfg(tmp_path, CONV_BN + "[route]\nlayers=3\n"), random_weights=True)
    with pytest.raises(ModelError, match="no \\[net\\] section"):
        (tmp_path / "bare.cfg").write_text(CONV_BN)
        darknet.convert(tmp_path / "bare.cfg", random_weights=True)


@pytest.mark.parametrize("extra", ["flipped=1", "stride_x=2", "binary=1"])
def test_options_that_change_the_maths_are_refused(tmp_path, extra):
    with pytest.raises(ModelError, match=rf"\[convolutional\] section \(layer 0.*sets {extra.split('=')[0]}="):
        darknet.convert(_cfg(tmp_path, CONV_BN + extra + "\n"), random_weights=True)


@pytest.mark.parametrize("version, header", [((0, 1, 0), 16), ((0, 2, 0), 20), ((1, 0, 0), 20)])
def test_header_version_decides_seen_width(tmp_path, version, header):
    cfg = _cfg(tmp_path, CONV_BN + CONV)
    floats = 4 * 4 + 4 * 3 * 9 + 2 + 2 * 4  # biases+bn, weights; biases, weights
    path = darknet.write_weights(tmp_path / "w.weights", cfg, seed=1, version=version, seen=123)
    data = path.read_bytes()
    assert len(data) == header + 4 * floats
    seen = np.frombuffer(data[12:header], "<i8" if header == 20 else "<i4")[0]
    assert seen == 123
    blobs = read_weights(path, _layout(cfg))
    assert blobs[0]["weights"].shape == (4, 3, 3, 3) and blobs[1]["weights"].shape == (2, 4, 1, 1)


def test_given_arrays_round_trip_in_darknet_order(tmp_path):
    cfg = _cfg(tmp_path, CONV_BN + CONN)
    rng = np.random.default_rng(0)
    given = {"conv_0": {k: rng.random(4, dtype=np.float32) for k in ("biases", "scales", "rolling_mean", "rolling_variance")},
             "fullyConnected_1": {"weights": rng.random((5, 4 * 8 * 8), dtype=np.float32)}}
    given["conv_0"]["weights"] = rng.random((4, 3, 3, 3), dtype=np.float32)
    path = darknet.write_weights(tmp_path / "w.weights", cfg, given)
    floats = np.frombuffer(path.read_bytes()[20:], "<f4")
    # Darknet order: biases, scales, rolling_mean, rolling_variance, weights
    np.testing.assert_array_equal(floats[:4], given["conv_0"]["biases"])
    np.testing.assert_array_equal(floats[4:8], given["conv_0"]["scales"])
    np.testing.assert_array_equal(floats[12:16], given["conv_0"]["rolling_variance"])
    blobs = read_weights(path, _layout(cfg))
    np.testing.assert_array_equal(blobs[0]["weights"], given["conv_0"]["weights"])
    np.testing.assert_array_equal(blobs[1]["weights"], given["fullyConnected_1"]["weights"])
    assert blobs[1]["biases"].shape == (5,)  # not given: random


def test_write_weights_rejects_unknown_or_misshaped_arrays(tmp_path):
    cfg = _cfg(tmp_path, CONV_BN)
    with pytest.raises(ModelError, match="conv_7"):
        darknet.write_weights(tmp_path / "w.weights", cfg, {"conv_7": {}})
    with pytest.raises(ModelError, match=r"conv_0\.weights.*\(4, 3, 3, 3\)"):
        darknet.write_weights(tmp_path / "w.weights", cfg, {"conv_0": {"weights": np.zeros(3)}})


@pytest.mark.parametrize("delta, word", [(-4, "too short"), (8, "too long")])
def test_weights_of_wrong_length_say_expected_and_got(tmp_path, delta, word):
    cfg = _cfg(tmp_path, CONV_BN)
    path = darknet.write_weights(tmp_path / "w.weights", cfg)
    data = path.read_bytes()
    bad = tmp_path / "bad.weights"
    bad.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    need = 4 * 4 + 4 * 27
    got = need + delta // 4
    with pytest.raises(ModelError, match=rf"holds {got} floats.*needs {need} \({word}\).*trained with this exact \.cfg"):
        darknet.convert(cfg, bad)


def test_missing_weights_and_tiny_files_are_clear(tmp_path):
    cfg = _cfg(tmp_path, CONV_BN)
    with pytest.raises(ModelError, match="no .weights file given"):
        darknet.convert(cfg)
    (tmp_path / "h.weights").write_bytes(b"\0" * 8)
    with pytest.raises(ModelError, match="16-byte header"):
        darknet.convert(cfg, tmp_path / "h.weights")
    with pytest.raises(ModelError, match="does not exist"):
        darknet.convert(cfg, tmp_path / "none.weights")


def test_input_shape_override_rules(tmp_path):
    cfg = _cfg(tmp_path, CONV_BN)
    model = darknet.convert(cfg, random_weights=True, input_shapes=[(2, 3, 16, 12)], input_names=["image"])
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "image" and dims == [2, 3, 16, 12]
    with pytest.raises(ConfigError, match="4 channels"):
        darknet.convert(cfg, random_weights=True, input_shapes={"data": [1, 4, 8, 8]})
    with pytest.raises(ConfigError, match=r"\[connected\] layer 1"):
        darknet.convert(_cfg(tmp_path, CONV_BN + CONN, "c.cfg"), random_weights=True, input_shapes=[1, 3, 16, 16])
