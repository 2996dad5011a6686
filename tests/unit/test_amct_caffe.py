"""int8kit.amct on a Caffe model (prototxt + caffemodel): layer names in the config and record are
Caffe's, the fused FP32 Caffe model OpenCV reads matches the original, convert_model rebuilds the
INT8 model bit for bit, and uninplace_model gives in-place layers blobs of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from caffe_nets import CaffeNet

import int8kit.amct as amct
from int8kit.amct.record import read_record
from int8kit.importers.caffe import proto

cv2 = pytest.importorskip("cv2")
RNG = np.random.default_rng(3)


def rnd(*shape: int, s: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * s).astype(np.float32)


def conv_bn_net() -> CaffeNet:
    """conv1+bn1+scale1+relu1 (in place) -> pool1 -> conv2+bn2+scale2+relu2 -> fc, with a TRAIN-only Dropout."""
    net = CaffeNet(data=(1, 3, 16, 16))
    for k, cin in ((1, 3), (2, 8)):
        bottom = "data" if k == 1 else "pool1"
        net.add("Convolution", f"conv{k}", bottom, params="convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false }",
                blobs=[rnd(8, cin, 3, 3)])
        net.add("BatchNorm", f"bn{k}", f"conv{k}", top=f"conv{k}",
                blobs=[rnd(8), np.abs(rnd(8)) + 0.5, np.array([1.0], np.float32)])
        net.add("Scale", f"scale{k}", f"conv{k}", top=f"conv{k}", params="scale_param { bias_term: true }",
                blobs=[np.abs(rnd(8)) + 0.5, rnd(8)])
        net.add("ReLU", f"relu{k}", f"conv{k}", top=f"conv{k}")
        if k == 1:
            net.add("Pooling", "pool1", "conv1", params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    net.add("Dropout", "drop", "conv2", top="conv2", params="include { phase: TRAIN }")
    net.add("InnerProduct", "fc", "conv2", params="inner_product_param { num_output: 5 }", blobs=[rnd(5, 8 * 8 * 8), rnd(5)])
    return net


def _feed(n: int):
    rng = np.random.default_rng(5)
    return [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(n)]


def test_caffe_sample_flow_names_fused_model_and_convert(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, weights = conv_bn_net().write(tmp_path)
    amct.create_quant_config("config.json", str(model), str(weights), batch_num=3)
    graph = amct.init("config.json", str(model), str(weights), "tmp/record.txt")
    amct.weights_quantize_model(graph, "tmp/modified_model.prototxt", "tmp/modified_model.caffemodel")
    amct.activation_quantize_model(graph, "tmp/modified_model.prototxt", "tmp/modified_model.caffemodel")
    sess = amct.calibration_session(graph)
    for x in _feed(3):
        sess.run(None, {"data": x})
    amct.save_model(graph, "Both", "results/net")
    keys = [e.key for e in read_record("results/net_quant_param_record.txt").record]
    assert {"conv1", "conv2", "fc"} <= set(keys) and not {"bn1", "scale1", "bn2"} & set(keys)
    import json
    config = json.load(open("config.json"))
    assert config["fc"]["weight_quant_params"]["channel_wise"] is False  # the manual: InnerProduct per tensor
    info = json.load(open("results/net_quant.json"))
    assert set(info["layers"]["conv1"]["original_layers"]) == {"conv1", "bn1", "scale1"}
    assert info["layers"]["conv1"]["type"] == "Convolution"

    # the fused FP32 Caffe model: no BatchNorm/Scale left, same outputs as the original in OpenCV
    fused = proto.read_prototxt("results/net_fused_model.prototxt")
    assert [layer.type for layer in fused.layer if layer.type in ("BatchNorm", "Scale")] == []
    original = cv2.dnn.readNetFromCaffe(str(model), str(weights))
    folded = cv2.dnn.readNetFromCaffe("results/net_fused_model.prototxt", "results/net_fused_model.caffemodel")
    modified = cv2.dnn.readNetFromCaffe("tmp/modified_model.prototxt", "tmp/modified_model.caffemodel")
    x = _feed(1)[0]
    outs = []
    for net in (original, folded, modified):
        net.setInput(x)
        outs.append(net.forward())
    scale = np.abs(outs[0]).max()
    assert np.abs(outs[1] - outs[0]).max() < 1e-4 * scale
    assert 0 < np.abs(outs[2] - outs[0]).max() < 0.05 * scale  # fake-quantized weights: close, not equal

    # convert_model from the record alone: the same INT8 models
    amct.convert_model(str(model), str(weights), "results/net_quant_param_record.txt", "again/net")
    for suffix in ("fake_quant_model.onnx", "deploy_model.onnx"):
        assert Path(f"results/net_{suffix}").read_bytes() == Path(f"again/net_{suffix}").read_bytes()
    # ... and from the fused Caffe model + record, the vendor-compiler input: the same integers
    amct.convert_model("results/net_fused_model.prototxt", "results/net_fused_model.caffemodel",
                       "results/net_quant_param_record.txt", "fused/net")
    import onnxruntime as ort
    a, b = (ort.InferenceSession(f"{d}/net_fake_quant_model.onnx").run(None, {"data": x})[0] for d in ("results", "fused"))
    assert np.array_equal(a, b)


def test_uninplace_model(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, _ = conv_bn_net().write(tmp_path)
    amct.uninplace_model(str(model), str(tmp_path / "un.prototxt"))
    net = proto.read_prototxt(tmp_path / "un.prototxt")
    layers = {layer.name: layer for layer in net.layer}
    assert "drop" not in layers  # a TRAIN-only layer goes
    for layer in net.layer:
        assert not set(layer.top) & set(layer.bottom), layer.name
    assert list(layers["bn1"].bottom) == ["conv1"] and list(layers["scale1"].bottom) == list(layers["bn1"].top)
    assert list(layers["pool1"].bottom) == list(layers["relu1"].top)
    tops = [t for layer in net.layer for t in layer.top]
    assert len(tops) == len(set(tops))


def test_skip_fusion_layers_keep_that_batchnorm_everywhere(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, weights = conv_bn_net().write(tmp_path)
    Path("quant.cfg").write_text('skip_fusion_layers: "conv2"\nbatch_num: 2\n')
    amct.create_quant_config("config.json", str(model), str(weights), config_defination="quant.cfg")
    graph = amct.init("config.json", str(model), str(weights), "tmp/record.txt")
    ops = {n.name: n.op_type for n in graph.optimized.graph.node}
    assert "bn1" not in ops and ops.get("bn2") == "BatchNormalization"
    sess = amct.calibration_session(graph)
    for x in _feed(2):
        sess.run(None, {"data": x})
    amct.save_model(graph, "Both", "results/net")
    record = {e.key: e.value for e in read_record("results/net_quant_param_record.txt").record}
    assert record["conv2"].skip_fusion and not record["conv1"].skip_fusion
    fused = [layer.name for layer in proto.read_prototxt("results/net_fused_model.prototxt").layer]
    assert "bn2" in fused and "scale2" in fused and "bn1" not in fused
    amct.convert_model(str(model), str(weights), "results/net_quant_param_record.txt", "again/net")
    assert Path("results/net_fake_quant_model.onnx").read_bytes() == Path("again/net_fake_quant_model.onnx").read_bytes()
    with pytest.raises(Exception, match="skip_fusion_layers names 'conv_2'.*did you mean 'conv2'"):
        Path("bad.cfg").write_text('skip_fusion_layers: "conv_2"\n')
        amct.create_quant_config("c2.json", str(model), str(weights), config_defination="bad.cfg")


MANUAL_CFG = """# the AMCT manual's non-uniform sample .cfg, as printed there
skip_layers : "pool1"
skip_layer_types:"Softmax"
do_fusion: true
skip_fusion_layers : "conv1"
update_bn: true
bn_update_config : {
bn_update_iterations : 30
bn_moving_average_fraction: 0.5
bn_dump_dir: 'tmp/bn_data'
}
common_config : {
ifmr_quantize : { search_range_start : 0.7 search_range_end : 1.3 search_step : 0.01 max_percentile : 0.999999 min_percentile : 0.999999 num_bits:8 }
snq_quantize : { channel_wise : true max_iteration : 1000 min_distance : 1e-10 init_algo : 'gaussian' }
}
override_layer_types : {
layer_type : "InnerProduct"
calibration_config : {
ifmr_quantize : { search_range_start : 0.7 search_range_end : 1.3 search_step : 0.01 max_percentile : 0.999999 min_percentile : 0.999999 num_bits:8 }
arq_quantize : { channel_wise : false num_bits:8 }
}
}
override_layer_configs : {
layer_name : "conv1"
calibration_config : {
arq_quantize : { channel_wise : true num_bits:8 }
ifmr_quantize : { search_range_start : 0.8 search_range_end : 1.2 search_step : 0.02 max_percentile : 0.999999 min_percentile : 0.999999 num_bits:8 }
}
}
"""


def test_the_manuals_sample_cfg_runs(tmp_path: Path, monkeypatch):
    pytest.importorskip("int8kit.weights.snq", reason="the SNQ core (weights/snq.py) is not in this checkout")
    monkeypatch.chdir(tmp_path)
    net = conv_bn_net().add("Softmax", "prob", "fc")
    model, weights = net.write(tmp_path)
    Path("quant.cfg").write_text(MANUAL_CFG)
    amct.create_quant_config("config.json", str(model), str(weights), config_defination="quant.cfg")
    import json
    config = json.load(open("config.json"))
    assert config["pool1"] == {"quant_enable": False} and config["update_bn"] is True
    assert config["conv1"]["weight_quant_params"]["wts_algo"] == "arq_quantize"
    assert config["conv1"]["activation_quant_params"]["search_range"] == [0.8, 1.2]
    assert config["conv2"]["weight_quant_params"]["wts_algo"] == "snq_quantize"
    assert config["conv2"]["weight_quant_params"]["init_algo"] == "gaussian"
    assert config["fc"]["weight_quant_params"] == {"wts_algo": "arq_quantize", "channel_wise": False, "num_bits": 8}
    graph = amct.init("config.json", str(model), str(weights), "tmp/record.txt")
    assert "pool1" in graph.quant.fp_layers and graph.quant.weight_algo == "snq"
    assert {n.name: n.op_type for n in graph.optimized.graph.node}.get("bn1") == "BatchNormalization"  # skip_fusion_layers
    sess = amct.calibration_session(graph)
    for x in _feed(1):
        sess.run(None, {"data": x})
    amct.save_model(graph, "Both", "results/net")
    record = {e.key: e.value for e in read_record("results/net_quant_param_record.txt").record}
    assert record["conv2"].num_bits_w == 4 and record["conv1"].num_bits_w == 8 and len(record["fc"].scale_w) == 1
    assert Path("tmp/bn_data/bn_update.npz").is_file()
