"""Darknet import on Debian's real cfgs and photos (package ``darknet``), checked against OpenCV dnn.

No trained .weights ship offline, so weights are random, written in Darknet's .weights format:
the checks are conversion parity (same function as OpenCV) and a quantization smoke run, not
detection accuracy. ``benchmarks/darknet_parity.py`` runs every cfg; here a representative set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

CFG_DIR = Path("/usr/share/darknet/cfg")
PHOTO_DIR = Path("/usr/share/darknet/data")
# letterbox with Darknet's grey, RGB, pixels / 255: what darknet's detector does with a photo
LETTERBOX = "letterbox_h={s},letterbox_w={s},pad_value=127.5;bgr2rgb;scale=0.00392156862745098"


def _need_darknet_files() -> None:
    if not (CFG_DIR / "yolov3-tiny.cfg").is_file() or not (PHOTO_DIR / "dog.jpg").is_file():
        pytest.skip("Debian package 'darknet' is not installed (needs /usr/share/darknet/cfg and data/dog.jpg)")


@pytest.fixture(autouse=True)
def _requirements():
    pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is the Darknet reference")
    _need_darknet_files()


# small weights files: yolo (upsample, route), region, classifiers (avgpool, softmax), a 1-channel net;
# reorg, connected, shortcut are covered per layer in tests/unit/test_darknet_convert.py
@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov2-tiny-voc", "tiny", "darknet", "writing"])
def test_debian_cfg_matches_opencv_layer_by_layer(tmp_path, name):
    from benchmarks.darknet_parity import check_cfg

    row = check_cfg(CFG_DIR / f"{name}.cfg", tmp_path, size=128)
    assert row.converted == "yes" and row.opencv == "yes", row
    assert row.unnamed == [], f"OpenCV layers without a same-named ONNX node: {row.unnamed}"
    assert row.layers > 5
    assert row.rel_err < 1e-4 and row.cosine > 0.99999 and row.layer_cosine > 0.9999, row


def test_every_cfg_opencv_reads_is_planned():
    """Structure of every Debian cfg OpenCV accepts: sections, shapes and weight layout resolve."""
    import cv2

    from int8kit.importers.darknet.cfg import parse_cfg, plan_layers
    from int8kit.importers.darknet.weights import blob_layout

    readable = []
    for cfg in sorted(CFG_DIR.glob("*.cfg")):
        try:
            cv2.dnn.readNetFromDarknet(str(cfg))
        except cv2.error:
            continue
        net, sections = parse_cfg(cfg)
        c, h, w = net.get_int("channels", 3), net.get_int("height", 416), net.get_int("width", 416)
        plan = plan_layers(sections, c, h, w)
        assert blob_layout(plan, c, h, w), cfg.name
        readable.append(cfg.stem)
    assert len(readable) >= 30 and "yolov3" in readable


def _photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for jpg in sorted(PHOTO_DIR.glob("*.jpg")):
        shutil.copy(jpg, folder / jpg.name)
    return folder


def test_dog_photo_through_converted_yolov3_tiny_matches_opencv(tmp_path):
    import onnxruntime as ort

    from int8kit.data.images import decode_rgb
    from int8kit.data.preprocess import parse_preprocess
    from int8kit.importers import darknet

    cfg = CFG_DIR / "yolov3-tiny.cfg"
    weights = darknet.write_weights(tmp_path / "yolov3-tiny.weights", cfg, seed=0)
    model = darknet.convert(cfg, weights)  # the cfg's own 416x416
    rgb = decode_rgb(PHOTO_DIR / "dog.jpg")
    x = parse_preprocess(LETTERBOX.format(s=416))(np.ascontiguousarray(rgb[..., ::-1]))[None].astype(np.float32)
    assert x.shape == (1, 3, 416, 416) and 0.0 <= x.min() and x.max() <= 1.0
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
    want = darknet.reference(cfg, weights).run({"data": x})
    assert sorted(got) == ["yolo_16", "yolo_23"]
    for name in got:
        a, b = got[name].ravel().astype(np.float64), want[name].ravel().astype(np.float64)
        assert got[name].shape == (1, 255, 13, 13) if name == "yolo_16" else (1, 255, 26, 26)
        assert np.abs(a - b).max() < 1e-4 * np.abs(b).max()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99999


def test_quantize_converted_tiny_yolo_from_photos(tmp_path):
    """Smoke run with random weights: int8kit.quantize takes the .cfg/.weights directly."""
    import onnx
    import onnxruntime as ort

    import int8kit
    from int8kit.importers import darknet

    cfg = CFG_DIR / "yolov3-tiny.cfg"
    weights = darknet.write_weights(tmp_path / "yolov3-tiny.weights", cfg, seed=0)
    photos = _photos(tmp_path)
    pre = LETTERBOX.format(s=160)
    result = int8kit.quantize(cfg, str(photos), framework="darknet", weights=weights, input_shapes="(1,3,160,160)",
                              preprocess=pre, output_dir=tmp_path / "out", progress=False)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(result.int8_model)).graph.node) >= 13
    int8 = ort.InferenceSession(str(result.int8_model), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(darknet.convert(cfg, weights, input_shapes=[(1, 3, 160, 160)]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    from int8kit.data.images import decode_rgb
    from int8kit.data.preprocess import parse_preprocess

    pipeline = parse_preprocess(pre)
    cosines = []
    for jpg in sorted(photos.glob("*.jpg")):
        x = pipeline(np.ascontiguousarray(decode_rgb(jpg)[..., ::-1]))[None].astype(np.float32)
        for a, b in zip(int8.run(None, {"data": x}), fp32.run(None, {"data": x})):
            a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
            cosines.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert len(cosines) == 2 * 7
    assert min(cosines) > 0.98, cosines
