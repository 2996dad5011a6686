"""Darknet to ONNX: tiny cfgs built here, every layer compared with OpenCV dnn (or Darknet's own
formula where OpenCV cannot run the layer), node names checked against OpenCV's layer names."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from int8kit.importers import darknet
from int8kit.importers.darknet.cfg import parse_cfg, plan_layers
from int8kit.importers.darknet.weights import blob_layout, read_weights

NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n"


def conv(filters, size=3, stride=1, act="leaky", bn=1, pad=1, **extra):
    lines = [f"filters={filters}", f"size={size}", f"stride={stride}", f"pad={pad}", f"activation={act}",
             f"batch_normalize={bn}"] + [f"{k}={v}" for k, v in extra.items()]
    return "[convolutional]\n" + "\n".join(lines) + "\n"


def sec(kind, **opts):
    return f"[{kind}]\n" + "".join(f"{k}={v}\n" for k, v in opts.items())


CASES = {
    "activations": conv(8, act="mish") + conv(8, act="swish", bn=0) + conv(6, act="tanh") + conv(6, act="logistic")
    + conv(4, act="relu", bn=0) + sec("avgpool") + sec("softmax", groups=1),
    "pools_upsample_route": conv(8) + sec("maxpool", size=2, stride=2) + conv(8, size=1, pad=0)
    + sec("maxpool", size=2, stride=1) + sec("maxpool", size=3, stride=2) + sec("upsample", stride=2)
    + sec("route", layers="-1,-4") + sec("route", layers=-2) + conv(4, size=1),
    "grouped_route": conv(8) + sec("route", layers=-1, groups=2, group_id=1) + conv(4, size=1) + sec("route", layers="-1,-3"),
    "shortcut_channels_alpha": conv(8, act="linear") + conv(4, act="logistic") + sec("shortcut", **{"from": -2}, activation="leaky")
    + conv(12, size=1, bn=0, act="linear") + sec("shortcut", **{"from": -3}, alpha=0.5),
    "grouped_conv_padding": conv(6) + conv(6, stride=2, groups=3, bn=0) + conv(6, pad=0, padding=2, groups=6),
    "connected_softmax": conv(4, stride=2, act="relu") + sec("maxpool", size=3, stride=2)
    + sec("connected", output=10, batch_normalize=1, activation="leaky") + sec("dropout", probability=0.5)
    + sec("connected", output=5, activation="linear") + sec("softmax", groups=1) + sec("cost", type="sse"),
    "reorg_region": conv(16) + sec("reorg", stride=2) + conv(30, size=1, act="linear", bn=0)
    + sec("region", anchors="1,1,2,2,3,3,4,4,5,5", classes=1, coords=4, num=5, softmax=1),
    "yolo_heads": conv(16) + conv(18, size=1, act="linear", bn=0) + sec("yolo", mask="0,1,2", anchors="1,1,2,2,3,3,4,4",
    classes=1, num=4) + sec("route", layers=-3) + sec("upsample", stride=2) + conv(18, size=1, act="linear", bn=0)
    + sec("yolo", mask="1,2,3", anchors="1,1,2,2,3,3,4,4", classes=1, num=4),
}


def _write(tmp_path, body, h=16, w=16, name="net"):
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(NET.format(h=h, w=w) + body)
    return cfg, darknet.write_weights(tmp_path / f"{name}.weights", cfg, seed=3)


def _run_onnx(model, x, names=None):
    if names:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))


def _close(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    assert a.size == b.size
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_matches_opencv(tmp_path, case):
    pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is the Darknet reference")
    cfg, weights = _write(tmp_path, CASES[case])
    model = darknet.convert(cfg, weights, input_shapes=[(2, 3, 16, 16)])
    ref = darknet.reference(cfg, weights, input_shapes=[(2, 3, 16, 16)])
    produced = {o for n in model.graph.node for o in n.output}
    node_names = {n.name for n in model.graph.node}
    # one name per layer in both runtimes (OpenCV's permute_ only feeds its own yolo/region decoder)
    assert {n for n in ref.layer_names if not n.startswith("permute_")} <= node_names & produced
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    outputs = [o.name for o in model.graph.output]
    layers = sorted((ref.layer_names & produced) - set(outputs))
    got = _run_onnx(model, x, layers)
    want = ref.run({"data": x}) | ref.run({"data": x}, layers=layers)
    for name in outputs + layers:
        _close(got[name], want[name])


def test_yolo_and_region_outputs_are_the_raw_maps(tmp_path):
    cfg, weights = _write(tmp_path, CASES["yolo_heads"])
    model = darknet.convert(cfg, weights)
    assert [o.name for o in model.graph.output] == ["yolo_2", "yolo_6"]
    feeds = {n.name: n.input[0] for n in model.graph.node if n.name.startswith("yolo_")}
    assert feeds == {"yolo_2": "conv_1", "yolo_6": "conv_5"}
    cfg, weights = _write(tmp_path, CASES["reorg_region"], name="region")
    model = darknet.convert(cfg, weights)
    assert [o.name for o in model.graph.output] == ["detection_out"]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim][1:] == [30, 8, 8]


def _darknet_reorg(x, s):
    """Darknet's reorg_cpu(forward=0) loop on one (C, H, W) map, written out directly."""
    c, h, w = x.shape
    flat, out = x.ravel(), np.empty(x.size, x.dtype)
    oc = c // (s * s)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                c2, off = k % oc, k // oc
                out[i + w * (j + h * k)] = flat[(i * s + off % s) + w * s * ((j * s + off // s) + h * s * c2)]
    return out.reshape(c * s * s, h // s, w // s)


def test_reorg_follows_darknets_loop(tmp_path):
    cfg, weights = _write(tmp_path, conv(8, bn=0, act="linear") + sec("reorg", stride=2), h=8, w=8)
    model = darknet.convert(cfg, weights)
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    got = _run_onnx(model, x, ["conv_0"])
    np.testing.assert_allclose(got["reorg_1"][0], _darknet_reorg(got["conv_0"][0], 2), rtol=0, atol=0)


def test_resnet_shortcut_samples_the_larger_map_like_darknet(tmp_path):
    # Darknet's ResNet cfgs add a 2x larger map: shortcut_cpu reads add[c, 2j, 2i] for c < min(C)
    body = conv(4, act="linear") + conv(8, stride=2, act="linear") + sec("shortcut", **{"from": -2})
    cfg, weights = _write(tmp_path, body, h=8, w=8)
    model = darknet.convert(cfg, weights)
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    got = _run_onnx(model, x, ["bn_0", "bn_1"])
    want = got["bn_1"].copy()
    want[:, :4] += got["bn_0"][:, :, ::2, ::2]
    np.testing.assert_allclose(got["shortcut_2"], want, rtol=1e-6)


def test_crop_centre_adjust_and_shifted_names(tmp_path):
    cfg, weights = _write(tmp_path, sec("crop", crop_height=12, crop_width=10) + conv(4, act="relu"))
    model = darknet.convert(cfg, weights)
    names = [n.name for n in model.graph.node]
    assert {"crop_0", "adjust_crop_1", "conv_2", "bn_2", "relu_3"} <= set(names)  # OpenCV's numbering
    x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    got = _run_onnx(model, x, ["adjust_crop_1"])
    np.testing.assert_allclose(got["adjust_crop_1"], x[:, :, 2:14, 3:13] * 2 - 1, rtol=1e-6)


def test_activations_opencv_lacks_follow_their_formulas(tmp_path):
    body = conv(4, act="relu6", bn=0) + conv(4, act="hardswish", bn=0, size=1) + conv(4, act="elu", bn=0, size=1)
    cfg, weights = _write(tmp_path, body, h=4, w=4)
    model = darknet.convert(cfg, weights)
    x = (np.random.default_rng(4).random((1, 3, 4, 4), dtype=np.float32) - 0.5) * 40
    got = _run_onnx(model, x, ["conv_0", "relu6_1", "conv_1", "hardswish_2", "conv_2"])
    np.testing.assert_allclose(got["relu6_1"], np.clip(got["conv_0"], 0, 6))
    c1 = got["conv_1"]
    np.testing.assert_allclose(got["hardswish_2"], c1 * np.clip(c1 / 6 + 0.5, 0, 1), rtol=1e-5, atol=1e-6)
    c2 = got["conv_2"]
    np.testing.assert_allclose(got["elu_3"], np.where(c2 > 0, c2, np.expm1(c2)), rtol=1e-5, atol=1e-6)


def test_dilated_conv_uses_alexeyab_padding(tmp_path):
    cfg, weights = _write(tmp_path, conv(4, size=3, dilation=2, bn=0, act="linear") + conv(4, size=1, dilation=2))
    model = darknet.convert(cfg, weights)
    attrs = {n.name: {a.name: list(a.ints) for a in n.attribute} for n in model.graph.node if n.op_type == "Conv"}
    assert attrs["conv_0"]["pads"] == [2, 2, 2, 2] and attrs["conv_0"]["dilations"] == [2, 2]
    assert attrs["conv_1"]["dilations"] == [1, 1]  # Darknet ignores dilation on 1x1 kernels
    x = np.random.default_rng(5).random((1, 3, 16, 16), dtype=np.float32)
    net, sections = parse_cfg(cfg)
    blobs = read_weights(weights, blob_layout(plan_layers(sections, 3, 16, 16), 3, 16, 16))[0]
    padded = np.pad(x[0], ((0, 0), (2, 2), (2, 2)))
    want = np.einsum("ocyx,cyxhw->ohw", blobs["weights"],
                     np.stack([np.stack([padded[:, 2 * ky:2 * ky + 16, 2 * kx:2 * kx + 16] for kx in range(3)], 1)
                               for ky in range(3)], 1)) + blobs["biases"][:, None, None]
    np.testing.assert_allclose(_run_onnx(model, x, ["conv_0"])["conv_0"][0], want, rtol=1e-4, atol=1e-5)


def test_random_weights_option_and_unknown_options(tmp_path):
    cfg, _ = _write(tmp_path, conv(4))
    a = darknet.convert(cfg, random_weights=True, seed=1)
    b = darknet.convert(cfg, random_weights=True, seed=2)
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data
    assert a.opset_import[0].version == 17
    from int8kit.errors import ConfigError

    with pytest.raises(ConfigError, match="fuse_bn"):
        darknet.convert(cfg, random_weights=True, fuse_bn=True)


def test_inspect_lists_a_darknet_model_by_the_names_quantize_takes(tmp_path, capsys):
    from int8kit.cli import main

    cfg, weights = _write(tmp_path, conv(8) + sec("maxpool", size=2, stride=2) + conv(4, size=1))
    assert main(["inspect", str(cfg), "--weights", str(weights)]) == 0
    listing = capsys.readouterr().out
    assert "conv_0" in listing and "pool_1" in listing and "conv_2" in listing
    assert main(["quantize", str(cfg), "--weights", str(weights), "--fp-layers", "conv_2", "-o", str(tmp_path / "q"),
                 "--data", str(_calib(tmp_path)), "--no-progress"]) == 0


def _calib(tmp_path):
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    return path
