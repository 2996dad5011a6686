"""PP-OCRv4 text detector (rapidocr-onnxruntime 1.4.4): the INT8 text map finds FP32's text regions.

A DBNet with dynamic H/W (opset 12): HardSwish backbone, SE blocks, nearest Resize and Concat in
the FPN neck, two ConvTranspose in the head. Needs the rapidocr models folder in
INT8KIT_RAPIDOCR_MODELS (CI exports it) or an installed rapidocr_onnxruntime package, plus cv2
and Pillow to render pages; skips otherwise (conftest's ``ocr_det_case``).
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

# Measured with the default kl, 16 calibration and 8 test pages: region recall 1.0 (92 regions),
# bitmap IoU 0.979, map cosine 0.9925 (onnxruntime MinMax, 32 pages, bench_det.py: 0.926 / 0.966).
REGION_RECALL_FLOOR = 0.93
BITMAP_IOU_FLOOR = 0.96
MAP_COSINE_FLOOR = 0.985


@pytest.fixture(scope="module")
def quantized(ocr_det_case, tmp_path_factory):
    import int8kit

    out = tmp_path_factory.mktemp("det")
    return int8kit.quantize(ocr_det_case.model_path, str(ocr_det_case.calib_npz), output_dir=out, progress=False)


def test_int8_text_map_matches_fp32(ocr_det_case, quantized) -> None:
    from benchmarks.bench_eval import load_npz, run_model
    from benchmarks.realdata_det import det_metrics

    test = load_npz(ocr_det_case.test_npz)
    fp32 = run_model(ocr_det_case.model_path, test, batch=4)
    metrics = det_metrics(fp32, run_model(quantized.int8_model, test, batch=4))
    assert metrics["regions"] >= 40, metrics  # the rendered pages are read as text
    assert metrics["region recall"] >= REGION_RECALL_FLOOR, metrics
    assert metrics["bitmap IoU"] >= BITMAP_IOU_FLOOR, metrics
    assert metrics["map cosine"] >= MAP_COSINE_FLOOR, metrics


def test_neck_and_head_run_quantized_and_sizes_stay_dynamic(ocr_det_case, quantized) -> None:
    """Resize/Concat read and write INT8 (onnxruntime runs them on uint8), ConvTranspose takes INT8
    weights, and the INT8 model still takes any page size although calibration sized a copy by the data."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(quantized.int8_model))
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    inits = {t.name for t in model.graph.initializer}
    ops = [n for n in model.graph.node if n.op_type in ("Resize", "Concat", "ConvTranspose")]
    assert sorted({n.op_type for n in ops}) == ["Concat", "ConvTranspose", "Resize"]
    for n in ops:
        assert producer[n.input[0]].op_type == "DequantizeLinear", n.name
        if n.op_type != "ConvTranspose":
            assert readers[n.output[0]] == ["QuantizeLinear"], n.name
        else:
            weight = producer[n.input[1]]
            assert weight.op_type == "DequantizeLinear" and weight.input[0] in inits, n.name
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[2].HasField("dim_value") and not dims[3].HasField("dim_value")

    from benchmarks.bench_eval import load_npz

    page = load_npz(ocr_det_case.test_npz)["x"][:1, :, :480, :]  # the top 480 rows: another size than calibration's
    fp32 = ort.InferenceSession(str(ocr_det_case.model_path), providers=["CPUExecutionProvider"]).run(None, {"x": page})[0]
    int8 = ort.InferenceSession(str(quantized.int8_model), providers=["CPUExecutionProvider"]).run(None, {"x": page})[0]
    assert int8.shape == fp32.shape == (1, 1, 480, 640)
    cos = float(np.dot(fp32.ravel(), int8.ravel()) / (np.linalg.norm(fp32) * np.linalg.norm(int8)))
    assert cos >= MAP_COSINE_FLOOR, cos
