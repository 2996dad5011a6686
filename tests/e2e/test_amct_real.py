"""The AMCT sample flow through int8kit.amct on real models: EfficientNet-Lite0 (ONNX) and the Caffe
res10 SSD face detector (prototxt + caffemodel). Same accuracy as `int8kit quantize` with the
equivalent options, scored as the core's e2e tests score them; convert_model rebuilds the models
from the record bit for bit; the fused Caffe model reads in OpenCV with the original's detections."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.bench_amct import amct_flow, equivalent_options, face_recall, facedet_calib, run_all
from int8kit import api
from int8kit.evaluate.metrics import top1_agreement

pytestmark = pytest.mark.e2e


def test_effnet_amct_flow_matches_quantize(effnet_case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, calib_npz, test_npz, _ = effnet_case
    calib = np.load(calib_npz)["input"]
    flow = amct_flow(str(model), None, [calib[i:i + 8] for i in range(0, len(calib), 8)], "input", tmp_path / "amct")
    assert flow["convert_bit_exact"]
    same = api.quantize(model, calib_npz, output_dir=tmp_path / "q", progress=False, check_latency=False,
                        **equivalent_options(flow["graph"]))
    test = {"input": np.load(test_npz)["input"]}
    fp32, fake, deploy, ref = (run_all(p, test) for p in (model, flow["fake"], flow["deploy"], same.int8_model))
    assert np.array_equal(fake, deploy)
    a_amct, a_ref = top1_agreement(fp32, fake), top1_agreement(fp32, ref)
    print(f"\nEfficientNet-Lite0 top-1 agreement with FP32 on {len(fp32)} crops: amct {a_amct:.3f}, "
          f"int8kit quantize (equivalent options) {a_ref:.3f}")
    assert abs(a_amct - a_ref) <= 3 / len(fp32) + 1e-9
    assert a_amct >= 0.8
    assert (tmp_path / "int8kit_log" / "int8kit_amct.log").is_file()


def test_facedet_amct_flow_matches_quantize(facedet, tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    import onnx

    from int8kit.importers.caffe import convert

    monkeypatch.chdir(tmp_path)
    model, weights = (str(p) for p in facedet)
    calib = facedet_calib(48)
    flow = amct_flow(model, weights, [calib[i:i + 1] for i in range(len(calib))], "data", tmp_path / "amct")
    assert flow["convert_bit_exact"]
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(convert(model, weights), fp32)
    np.save(tmp_path / "calib.npy", calib)
    same = api.quantize(fp32, tmp_path / "calib.npy", output_dir=tmp_path / "q", progress=False, check_latency=False,
                        **equivalent_options(flow["graph"]))
    (m_amct, total), (m_ref, _) = face_recall(fp32, flow["fake"]), face_recall(fp32, same.int8_model)
    m_deploy, _ = face_recall(fp32, flow["deploy"])
    print(f"\nfacedet faces matched: amct {m_amct}/{total}, deploy {m_deploy}/{total}, int8kit quantize {m_ref}/{total}")
    assert total >= 10 and m_amct / total >= 0.95 and abs(m_amct - m_ref) <= 1 and m_deploy == m_amct
    # the fused FP32 Caffe model: OpenCV gives the original's detections
    results = tmp_path / "amct" / "results"
    original = cv2.dnn.readNetFromCaffe(model, weights)
    fused = cv2.dnn.readNetFromCaffe(str(results / "model_fused_model.prototxt"), str(results / "model_fused_model.caffemodel"))
    compared = 0
    for blob in calib[:16]:
        outs = []
        for net in (original, fused):
            net.setInput(blob[None])
            det = net.forward()[0, 0]
            det = det[det[:, 2] >= 0.3]  # below, near-equal confidences may swap places
            outs.append(det[np.argsort(-det[:, 2], kind="stable")])
        assert outs[0].shape == outs[1].shape
        if len(outs[0]):
            assert np.abs(outs[0] - outs[1]).max() < 1e-3
            compared += len(outs[0])
    assert compared >= 5
    # the fused model + the record (what a vendor compiler takes) rebuild the same INT8 model
    from int8kit.amct import convert_model

    convert_model(str(results / "model_fused_model.prototxt"), str(results / "model_fused_model.caffemodel"),
                  str(results / "model_quant_param_record.txt"), str(tmp_path / "from_fused" / "model"))
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in
            (flow["fake"], tmp_path / "from_fused" / "model_fake_quant_model.onnx"))
    for blob in calib[:4]:
        assert np.array_equal(a.run(None, {"data": blob[None]})[0], b.run(None, {"data": blob[None]})[0])
    assert ort.InferenceSession(str(flow["deploy"]), providers=["CPUExecutionProvider"]) is not None
