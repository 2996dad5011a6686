"""SNQ (INT4 non-uniform weights) and BN update on EfficientNet-Lite0: the real model, real runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from int8kit import api

pytestmark = pytest.mark.e2e


def _top1(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)]).argmax(1)


def test_snq_with_bn_update_on_efficientnet(effnet_case, tmp_path):
    model, calib_npz, test_npz, _ = effnet_case
    calib, test = np.load(calib_npz)["input"], np.load(test_npz)["input"]
    stats = tmp_path / "stats.npz"
    int8 = api.quantize(model, calib, output_dir=tmp_path / "int8", progress=False, check_latency=False, dump_stats=stats)
    snq = api.quantize(model, None, stats=stats, output_dir=tmp_path / "snq", progress=False, check_latency=False,
                       weight_algo="snq", weight_bits=4)
    bn = api.quantize(model, calib, stats=stats, output_dir=tmp_path / "bn", progress=False, check_latency=False,
                      weight_algo="snq", weight_bits=4, update_bn=True)

    clustered = [n for n, t in snq.plan.tensors.items() if t.method == "snq"]
    assert len(clustered) > 40  # every quantized layer but the first and the last
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(snq.int8_model)).graph.initializer}
    for name in clustered:
        codes = inits[f"{name}_quantized"]
        assert max(len(np.unique(row)) for row in codes.reshape(codes.shape[0], -1)) <= 16, name

    # the deploy form: same outputs bit for bit, a smaller file
    fake, deploy = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (snq.int8_model, snq.int4_deploy_model))
    assert np.array_equal(fake.run(None, {"input": test[:8]})[0], deploy.run(None, {"input": test[:8]})[0])
    assert snq.int4_deploy_model.stat().st_size < 0.85 * snq.int8_model.stat().st_size

    ref = _top1(model, test)
    agreement = {name: float((_top1(r.int8_model, test) == ref).mean()) for name, r in
                 (("int8", int8), ("snq", snq), ("bn", bn))}
    print(f"\nEfficientNet-Lite0 top-1 agreement on {len(test)} crops: {agreement}")
    assert agreement["bn"] > agreement["snq"] + 0.03  # BN update recovers part of what clustering lost
    assert agreement["int8"] >= agreement["bn"] - 0.02 and agreement["int8"] > 0.85
