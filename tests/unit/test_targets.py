"""--target: the QDQ form each runtime fuses into integer kernels (structure checked here; speed in
benchmarks/bench_targets.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from int8kit.calib.collect import collect
from int8kit.config import QuantConfig
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import ConfigError
from int8kit.plan.planner import candidate_tensors, plan
from tests.unit.test_plan_emit import small_cnn

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def model_and_stats():
    model = small_cnn()
    data = RNG.standard_normal((64, 6, 16, 16)).astype(np.float32)
    return model, collect(model, data, tensors=candidate_tensors(model), progress=False), data


def _emit(model, stats, **options):
    qplan = plan(model, stats, QuantConfig(th_method="max", stem_float=False, **options))
    qmodel = emit_qdq(model, qplan)
    onnx.checker.check_model(qmodel)
    return qplan, qmodel


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _cosine(model, qmodel, x) -> float:
    y, yq = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
             for m in (model, qmodel))
    return float(np.mean(np.sum(y * yq, 1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(yq, axis=1))))


def test_tensorrt_form_is_symmetric_int8_with_float_biases_and_inputs_only(model_and_stats):
    model, stats, data = model_and_stats
    qplan, qmodel = _emit(model, stats, target="tensorrt")
    inits = {t.name: t for t in qmodel.graph.initializer}
    # no INT32 bias and no DequantizeLinear of one (TensorRT's parser rejects it)
    assert not any(t.data_type == TensorProto.INT32 for t in inits.values())
    for node in qmodel.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = numpy_helper.to_array(inits[node.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), node.name  # symmetric int8, zero point 0
    # the biases are the float values with the weight-rounding shift removed
    assert set(qplan.float_biases) == {"b1", "b2", "bf"}
    b1 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "b1"))
    assert not np.allclose(qplan.float_biases["b1"], b1) and np.allclose(qplan.float_biases["b1"], b1, atol=0.05)
    # Relu/Clip stay nodes; conv outputs a float op reads get no QuantizeLinear
    types = [n.op_type for n in qmodel.graph.node]
    assert types.count("Relu") == 2 and types.count("Clip") == 1
    producers = _producers(qmodel)
    quantized = {n.input[0] for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    assert "c1_float" not in quantized and "c1" not in quantized  # conv1 -> Relu: the Relu output is quantized
    assert producers["r1_float"].op_type == "Relu"
    assert _cosine(model, qmodel, data[:16]) > 0.99


def test_openvino_form_keeps_float_biases_and_no_onnxruntime_rewrites(model_and_stats):
    model, stats, data = model_and_stats
    qplan, qmodel = _emit(model, stats, target="openvino")
    assert not any(t.data_type == TensorProto.INT32 for t in qmodel.graph.initializer)
    assert not any(n.name.endswith("_channel_gain") for n in qmodel.graph.node)
    assert qplan.integer_hardswish == {} and set(qplan.float_biases) == {"b1", "b2", "bf"}
    assert _cosine(model, qmodel, data[:16]) > 0.99


def test_default_target_keeps_int32_biases(model_and_stats):
    model, stats, _ = model_and_stats
    qplan, qmodel = _emit(model, stats)
    int32 = {t.name for t in qmodel.graph.initializer if t.data_type == TensorProto.INT32 and t.name.endswith("_quantized")}
    assert qplan.float_biases == {} and int32 == {"b1_quantized", "b2_quantized", "bf_quantized"}


def test_a_target_sets_its_options_and_refuses_a_contradiction():
    cfg = QuantConfig(target="tensorrt")
    assert (cfg.signed_activations, cfg.channel_scales, cfg.integer_hardswish, cfg.inputs_only) == (True, False, False, True)
    assert QuantConfig(target="openvino").signed_activations is False
    with pytest.raises(ConfigError, match="did you mean 'openvino'"):
        QuantConfig(target="openvno")
    with pytest.raises(ConfigError, match="--target tensorrt takes symmetric int8"):
        QuantConfig(target="tensorrt", activation_offset=True)


def test_openvino_runs_the_openvino_form_and_the_latency_check_uses_it(tmp_path):
    pytest.importorskip("openvino", reason="openvino is an optional extra (pip install openvino)")
    import shutil

    import int8kit
    from int8kit.demo_data import demo_model_path, load_demo_data
    from int8kit.runtime.openvino import OpenVinoSession

    model = tmp_path / "net.onnx"
    shutil.copy(demo_model_path(), model)
    x = load_demo_data()["calib"][:32]
    result = int8kit.quantize(model, x, output_dir=None, target="openvino", progress=False)
    assert result.speed is not None and result.speed.runtime == "openvino"
    ov = OpenVinoSession(result.model)
    ref = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {ov.get_inputs()[0].name: x[:4]}
    got, want = ov.run(None, feed)[0], ref.run(None, feed)[0]
    assert got.shape == want.shape and (got.argmax(1) == want.argmax(1)).mean() >= 0.75
    assert int8kit.quantize(model, x, output_dir=None, target="tensorrt", progress=False).speed is None  # no TensorRT here


def test_eval_runs_both_models_in_openvino(tmp_path, capsys):
    pytest.importorskip("openvino", reason="openvino is an optional extra (pip install openvino)")
    import shutil

    from int8kit.cli import main
    from int8kit.demo_data import demo_model_path, load_demo_data

    model = tmp_path / "net.onnx"
    shutil.copy(demo_model_path(), model)
    np.save(tmp_path / "x.npy", load_demo_data()["calib"][:32])
    assert main(["quantize", str(model), "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q"), "--target", "openvino",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(model), str(tmp_path / "q" / "net_int8.onnx"), "--data", str(tmp_path / "x.npy"),
                 "--runtime", "openvino", "--json", "--no-progress"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "openvino" and result["top1_agreement"] > 0.8 and result["int8_latency_ms"] > 0


@pytest.mark.parametrize("target", ["onnxruntime", "openvino", "tensorrt"])
def test_the_stem_conv_runs_int8_only_where_the_runtime_gains(tmp_path, target):
    """By default the stem pair (an RGB conv and the depthwise conv after it) stays float; OpenVINO and
    TensorRT run the stem conv in INT8 on the image itself, with the depthwise conv still float."""
    from tests.unit.test_auto import _stem_net

    model = onnx.load(_stem_net(tmp_path / "stem.onnx"))
    data = RNG.standard_normal((16, 3, 16, 16)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="max", target=target))
    assert "dw" in qplan.float_nodes
    assert ("stem" in qplan.float_nodes) == (target == "onnxruntime")
    if target != "onnxruntime":
        qmodel = emit_qdq(model, qplan)
        stem = next(n for n in qmodel.graph.node if n.name == "stem")
        assert _producers(qmodel)[stem.input[1]].op_type == "DequantizeLinear"  # INT8 weights
        assert "x" in qplan.tensors  # the image is quantized for it
