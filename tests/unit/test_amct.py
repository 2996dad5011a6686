"""int8kit.amct, the AMCT facade: the sample call sequence on tiny ONNX and Caffe models, the files
(config.json, .cfg, record), convert_model's bit-exact rebuild, and the FAQ errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit.amct as amct
from int8kit.amct import config_file as cf
from int8kit.amct.record import read_record, write_record
from int8kit.calib.collect import collect
from int8kit.errors import CalibrationError, ConfigError
from int8kit.plan.planner import candidate_tensors, plan

RNG = np.random.default_rng(0)


def chain_model() -> onnx.ModelProto:
    """conv1-relu-conv2-relu-conv3-relu-dwconv4-relu-gap-flatten-fc1(Gemm)-fc2(MatMul): three op types."""
    def w(name, shape, s=0.3):
        return numpy_helper.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)
    nodes, inits, x = [], [], "x"
    for k, (cin, cout, group) in enumerate([(3, 8, 1), (8, 8, 1), (8, 8, 1), (8, 8, 8)], start=1):
        inits += [w(f"w{k}", (cout, cin // group, 3, 3)), w(f"b{k}", (cout,), 0.1)]
        nodes += [helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}", pads=[1, 1, 1, 1], group=group),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x = f"r{k}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "wf1", "bf1"], ["h"], name="fc1", transB=1),
              helper.make_node("MatMul", ["h", "wf2"], ["y"], name="fc2")]
    inits += [w("wf1", (16, 8), 0.5), w("bf1", (16,), 0.1), w("wf2", (16, 5), 0.5)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def batches(n: int, size: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal((size, 3, 12, 12)).astype(np.float32) for _ in range(n)]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # int8kit_log/ goes to the working directory, as AMCT's amct_log/


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(), path)
    return path


def sample_flow(model: Path, weights, tmp: Path, batch_num: int = 2, cfg=None, runs: int | None = None,
                feed=batches, name: str = "x"):
    """The manual's sample, with int8kit.amct and a session in place of the Caffe forward loop."""
    amct.create_quant_config(str(tmp / "config.json"), str(model), weights, batch_num, config_defination=cfg)
    graph = amct.init(str(tmp / "config.json"), str(model), weights, str(tmp / "tmp" / "record.txt"))
    mod = (str(tmp / "tmp" / "modified.onnx"), None) if weights is None else \
        (str(tmp / "tmp" / "modified.prototxt"), str(tmp / "tmp" / "modified.caffemodel"))
    amct.weights_quantize_model(graph, *mod)
    amct.activation_quantize_model(graph, *mod)
    sess = amct.calibration_session(graph)
    for batch in feed(batch_num if runs is None else runs):
        sess.run(None, {name: batch})
    return graph


def test_sample_flow_writes_amct_files_that_run_in_onnxruntime(onnx_file, tmp_path):
    graph = sample_flow(onnx_file, None, tmp_path)
    amct.save_model(graph, "Both", str(tmp_path / "results" / "chain"))
    res = tmp_path / "results"
    for suffix in ("fake_quant_model.onnx", "deploy_model.onnx", "quant.json", "quant_param_record.txt"):
        assert (res / f"chain_{suffix}").is_file(), suffix
    assert (tmp_path / "tmp" / "record.txt").read_text() == (res / "chain_quant_param_record.txt").read_text()
    x = batches(1)[0]
    fp32 = ort.InferenceSession(str(onnx_file)).run(None, {"x": x})[0]
    fake = ort.InferenceSession(str(res / "chain_fake_quant_model.onnx")).run(None, {"x": x})[0]
    deploy_model = onnx.load(res / "chain_deploy_model.onnx")
    deploy = ort.InferenceSession(deploy_model.SerializeToString()).run(None, {"x": x})[0]
    assert np.array_equal(fake, deploy)  # the operator form computes the same integers
    assert np.abs(fake - fp32).max() < 0.1 * np.abs(fp32).max()
    opts = ort.SessionOptions()  # onnxruntime fuses the fake-quant model into integer kernels
    opts.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    ort.InferenceSession(str(res / "chain_fake_quant_model.onnx"), opts, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(tmp_path / "ort_optimized.onnx").graph.node].count("QLinearConv") == 4
    ops = [n.op_type for n in deploy_model.graph.node]
    assert ops.count("QLinearConv") == 4 and "Conv" not in ops
    inits = {t.name: t for t in deploy_model.graph.initializer}
    assert inits["w1_quantized"].data_type == TensorProto.INT8 and inits["b1_quantized"].data_type == TensorProto.INT32
    info = json.loads((res / "chain_quant.json").read_text())
    assert info["layers"]["conv1"]["fused_activation"] == "relu1"
    assert "r1" in info["layers"]["conv1"]["quantized_tensors"]
    record = read_record(res / "chain_quant_param_record.txt")
    keys = [e.key for e in record.record]
    assert {"conv1", "conv2", "conv3", "conv4", "fc1", "fc2"} <= set(keys)
    conv1 = next(e.value for e in record.record if e.key == "conv1")
    assert len(conv1.scale_w) == 8 and list(conv1.offset_w) == [0] * 8 and conv1.record_d[0].index == 0
    assert (tmp_path / "int8kit_log" / "int8kit_amct.log").read_text().count("save_model") >= 1


def test_convert_model_rebuilds_save_models_bit_for_bit(onnx_file, tmp_path):
    graph = sample_flow(onnx_file, None, tmp_path)
    amct.save_model(graph, "Both", str(tmp_path / "a" / "m"))
    amct.convert_model(str(onnx_file), None, str(tmp_path / "a" / "m_quant_param_record.txt"), str(tmp_path / "b" / "m"))
    for suffix in ("fake_quant_model.onnx", "deploy_model.onnx"):
        assert (tmp_path / "a" / f"m_{suffix}").read_bytes() == (tmp_path / "b" / f"m_{suffix}").read_bytes(), suffix
    # the binary form of the record too
    write_record(read_record(tmp_path / "a" / "m_quant_param_record.txt"), tmp_path / "r.bin")
    amct.convert_model(str(onnx_file), None, str(tmp_path / "r.bin"), str(tmp_path / "c" / "m"))
    assert (tmp_path / "a" / "m_fake_quant_model.onnx").read_bytes() == (tmp_path / "c" / "m_fake_quant_model.onnx").read_bytes()


def _edited(tmp_path: Path, key: str, edit) -> Path:
    record = read_record(tmp_path / "a" / "m_quant_param_record.txt")
    entry = next(e for e in record.record if e.key == key)
    edit(record, entry)
    return write_record(record, tmp_path / "edited.txt")


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf")])
def test_record_with_a_bad_scale_is_one_error_naming_the_layer(onnx_file, tmp_path, value):
    amct.save_model(sample_flow(onnx_file, None, tmp_path), "Both", str(tmp_path / "a" / "m"))
    path = _edited(tmp_path, "conv2", lambda r, e: e.value.scale_w.__setitem__(3, value))
    with pytest.raises(ConfigError, match="record layer 'conv2': scale_w"):
        amct.convert_model(str(onnx_file), None, str(path), str(tmp_path / "b" / "m"))
    path = _edited(tmp_path, "conv3", lambda r, e: setattr(e.value.record_d[0], "scale_d", value))
    with pytest.raises(ConfigError, match="record layer 'conv3': record_d index 0 scale_d"):
        amct.convert_model(str(onnx_file), None, str(path), str(tmp_path / "b" / "m"))
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_record_missing_or_unknown_layers(onnx_file, tmp_path):
    amct.save_model(sample_flow(onnx_file, None, tmp_path), "Both", str(tmp_path / "a" / "m"))
    path = _edited(tmp_path, "conv2", lambda r, e: e.value.ClearField("record_d"))
    with pytest.raises(ConfigError, match="record layer 'conv2' has scale_w but no scale_d for its input 'r1'"):
        amct.convert_model(str(onnx_file), None, str(path), str(tmp_path / "b" / "m"))
    path = _edited(tmp_path, "conv2", lambda r, e: setattr(e, "key", "conv_2"))
    with pytest.raises(ConfigError, match="record layer 'conv_2' is not a layer of the model; did you mean 'conv2'"):
        amct.convert_model(str(onnx_file), None, str(path), str(tmp_path / "b" / "m"))


def test_faq_errors(onnx_file, tmp_path):
    graph = sample_flow(onnx_file, None, tmp_path, batch_num=2, runs=0)
    with pytest.raises(CalibrationError, match="before any calibration batch ran"):
        amct.save_model(graph, "Both", str(tmp_path / "r" / "m"))
    graph = sample_flow(onnx_file, None, tmp_path, batch_num=2, runs=1)
    with pytest.raises(CalibrationError, match="layer 'conv1' has statistics from 1 of 2 batches: run more batches or lower batch_num"):
        amct.save_model(graph, "Both", str(tmp_path / "r" / "m"))
    with pytest.raises(ConfigError, match="save_type must be one of Fakequant, Deploy, Both.*did you mean 'Both'"):
        amct.save_model(graph, "both", str(tmp_path / "r" / "m"))
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["conv_3"] = doc.pop("conv3")
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="names layer 'conv_3', which is not a quantizable layer of the model; did you mean 'conv3'"):
        amct.init(str(tmp_path / "bad.json"), str(onnx_file), None, str(tmp_path / "rec.txt"))


def test_a_range_that_gives_a_vanishing_scale_names_the_layer(onnx_file, tmp_path):
    graph = sample_flow(onnx_file, None, tmp_path, batch_num=1, feed=lambda n: [np.zeros((2, 3, 12, 12), np.float32)] * n)
    with pytest.raises(CalibrationError, match=r"layer 'conv1' \(tensor 'x'\): the data range \[0, 0\]"):
        amct.save_model(graph, "Both", str(tmp_path / "r" / "m"))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["conv1"]["activation_quant_params"].update(num_bits=17), r"conv1'.activation_quant_params.num_bits must be a whole number from 8 to 16 \(8 or 12 recommended\), got 17"),
    (lambda d: d["conv1"]["activation_quant_params"].update(max_percentile=0.4), r"max_percentile must be a number in \(0.5, 1\]"),
    (lambda d: d["conv1"]["activation_quant_params"].update(search_step=0.9), r"search_step must be a number in \(0, 0.6\]"),
    (lambda d: d["conv1"]["activation_quant_params"].update(search_rnage=[0.5, 1]), "unknown key 'search_rnage'; did you mean 'search_range'"),
    (lambda d: d["conv1"]["weight_quant_params"].update(wts_algo="arq"), "wts_algo must be one of arq_quantize, snq_quantize, got 'arq'; did you mean 'arq_quantize'"),
    (lambda d: d["conv1"]["weight_quant_params"].update(num_bits=4), "num_bits must be 8 for arq_quantize"),
    (lambda d: d["conv1"]["weight_quant_params"].update(wts_algo="snq_quantize", num_bits=4, max_iteration=100), "max_iteration must be a whole number from 500 to 2000"),
    (lambda d: d.update(batch_num=0), "batch_num must be a whole number greater than 0, got 0"),
    (lambda d: d.update(update_bn=True, bn_update_config={"bn_moving_average_fraction": 1.5}), r"bn_moving_average_fraction must be a number in \(0, 1\)"),
])
def test_config_json_values_are_checked_against_the_manuals_ranges(onnx_file, tmp_path, edit, message):
    amct.create_quant_config(str(tmp_path / "config.json"), str(onnx_file), None)
    doc = json.loads((tmp_path / "config.json").read_text())
    edit(doc)
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        amct.init(str(tmp_path / "config.json"), str(onnx_file), None, str(tmp_path / "rec.txt"))


CFG = """
skip_layers: "conv2"
skip_layer_types: "MatMul"
common_config {
  ifmr_quantize { search_range_start: 0.7 search_range_end: 1.3 search_step: 0.01 max_percentile: 0.999999 min_percentile: 0.999999 num_bits: 8 }
  arq_quantize { channel_wise: true num_bits: 8 }
}
override_layer_types {
  layer_type: "Gemm"
  calibration_config { arq_quantize { channel_wise: false num_bits: 8 } }
}
override_layer_configs {
  layer_name: "conv3"
  calibration_config { ifmr_quantize { search_range_start: 0.5 search_range_end: 0.9 search_step: 0.05 max_percentile: 0.999 min_percentile: 0.999 num_bits: 8 } }
}
"""


def _layer_view(quant_plan, model: onnx.ModelProto) -> dict[str, tuple]:
    """Per quantizable layer: its weight's granularity and scales, and its input's scale and zero point."""
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w = quant_plan.tensors.get(node.input[1])
        x = quant_plan.tensors.get(node.input[0])
        out[node.name] = (None if w is None else (w.axis, tuple(np.ravel(w.scale))),
                          None if x is None else (float(x.scale), int(x.zero_point)))
    return out


def test_cfg_changes_exactly_the_layers_it_names(onnx_file, tmp_path):
    (tmp_path / "quant.cfg").write_text(CFG)
    model = chain_model()
    stats = collect(model, np.concatenate(batches(2)), tensors=candidate_tensors(model), progress=False)
    views = {}
    for name, cfg in (("default", None), ("cfg", str(tmp_path / "quant.cfg"))):
        amct.create_quant_config(str(tmp_path / f"{name}.json"), str(onnx_file), None, config_defination=cfg)
        graph = amct.init(str(tmp_path / f"{name}.json"), str(onnx_file), None, str(tmp_path / "rec.txt"))
        views[name] = _layer_view(plan(graph.optimized, stats, graph.quant), graph.optimized)
    base, cfgd = views["default"], views["cfg"]
    changed = {layer for layer in base if base[layer] != cfgd[layer]}
    assert changed == {"conv2", "fc2", "fc1", "conv3"}
    assert cfgd["conv2"][0] is None and cfgd["fc2"][0] is None  # skip_layers, skip_layer_types: float
    assert base["fc1"][0][0] == 0 and cfgd["fc1"][0][0] is None  # override_layer_types: per tensor
    assert cfgd["conv3"][0] == base["conv3"][0] and cfgd["conv3"][1] != base["conv3"][1]  # only its input range
    doc = json.loads((tmp_path / "cfg.json").read_text())
    assert doc["conv3"]["activation_quant_params"]["search_range"] == [0.5, 0.9]
    assert doc["conv2"]["quant_enable"] is False and doc["fc2"]["quant_enable"] is False


@pytest.mark.parametrize("text, message", [
    ("common_config { snq_quantize { max_iteration: 100 } }", "max_iteration must be a whole number from 500 to 2000, got 100"),
    ("common_config { ifmr_quantize { num_bits: 20 } }", r"num_bits must be a whole number from 8 to 16 \(8 or 12 recommended\), got 20"),
    ("skip_layers: \"conv9\"", r"skip_layers names 'conv9', which is not a layer of the model; did you mean 'conv\d'\?"),
    ("skip_layer_types: \"Convolution\"", "skip_layer_types names 'Convolution', which is not a layer type of the model"),
    ("override_layer_types { layer_type: \"Relu\" calibration_config {} }", "override_layer_types names 'Relu', which is not a type of any quantizable layer"),
    ("skip_layer: \"conv1\"", "not a valid AMCTConfig"),
])
def test_cfg_out_of_range_is_one_clear_error(onnx_file, tmp_path, text, message):
    (tmp_path / "bad.cfg").write_text(text)
    with pytest.raises(ConfigError, match=message):
        amct.create_quant_config(str(tmp_path / "c.json"), str(onnx_file), None, config_defination=str(tmp_path / "bad.cfg"))
    assert not (tmp_path / "c.json").exists()


def test_session_memory_does_not_grow_with_batches(onnx_file, tmp_path):
    graph = sample_flow(onnx_file, None, tmp_path, batch_num=30, runs=2)
    sess = graph.session
    size = sum(s.counts.nbytes for s in sess._states.values())
    for batch in batches(28):
        sess.run(None, {"x": batch})
    assert sum(s.counts.nbytes for s in sess._states.values()) == size and sess.recorded == 30
    out = sess.run(["y"], {"x": batches(1)[0]})  # past batch_num: runs, records nothing
    assert out[0].shape == (4, 5) and sess.recorded == 30


def test_log_levels(onnx_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INT8KIT_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="INT8KIT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"):
        amct.create_quant_config(str(tmp_path / "c.json"), str(onnx_file), None)
    monkeypatch.setenv("INT8KIT_LOG_LEVEL", "error")
    monkeypatch.setenv("INT8KIT_LOG_FILE_LEVEL", "debug")
    sample_flow(onnx_file, None, tmp_path, batch_num=1)
    text = (tmp_path / "int8kit_log" / "int8kit_amct.log").read_text()
    assert "[DEBUG]" in text and "calibration batch 1 of 1 recorded" in text
    logging.getLogger("int8kit").handlers[:] = [h for h in logging.getLogger("int8kit").handlers if not hasattr(h, "_amct")]


def test_gpu_mode_says_when_there_is_no_gpu_provider():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is installed here")
    with pytest.raises(ConfigError, match="set_gpu_mode: this onnxruntime has no GPU provider"):
        amct.set_gpu_mode()
    amct.set_cpu_mode()


def test_weights_file_rules(onnx_file, tmp_path):
    with pytest.raises(ConfigError, match="weights_file must be None for an ONNX model_file"):
        amct.create_quant_config(str(tmp_path / "c.json"), str(onnx_file), "w.caffemodel")
    with pytest.raises(ConfigError, match="needs its weights_file"):
        amct.create_quant_config(str(tmp_path / "c.json"), str(tmp_path / "deploy.prototxt"), None)


def test_settings_round_trip():
    layers = {"conv1": "x", "fc": "flat"}
    settings = cf.parse_settings(json.loads(cf.dump(cf.AmctSettings(layers={"conv1": cf.LayerSettings()}))), list(layers), [])
    assert settings.layers["conv1"].act == cf.ACT_DEFAULTS and settings.batch_num == 1
    quant = cf.to_quant_config(settings, layers)
    assert quant.fp_layers == ("fc",)  # a layer left out of config.json is not quantized (the manual)
    assert quant.th_method == "ifmr" and quant.activation_offset and not quant.bias_correction


def test_snq_layers_are_recorded_as_4_bit_and_convert_model_refuses_them(onnx_file, tmp_path):
    pytest.importorskip("int8kit.weights.snq", reason="the SNQ core (weights/snq.py) is not in this checkout")
    amct.create_quant_config(str(tmp_path / "config.json"), str(onnx_file), None, 2)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["conv2"]["weight_quant_params"] = {"wts_algo": "snq_quantize", "num_bits": 4, "channel_wise": True,
                                           "max_iteration": 500, "min_distance": 1e-6, "init_algo": "uniform"}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    graph = amct.init(str(tmp_path / "config.json"), str(onnx_file), None, str(tmp_path / "rec.txt"))
    assert graph.quant.weight_algo == "snq" and graph.quant.overrides["conv1"].weight_algo == "arq"
    sess = amct.calibration_session(graph)
    for batch in batches(2):
        sess.run(None, {"x": batch})
    amct.save_model(graph, "Both", str(tmp_path / "a" / "m"))
    record = {e.key: e.value for e in read_record(tmp_path / "a" / "m_quant_param_record.txt").record}
    assert record["conv2"].num_bits_w == 4 and record["conv1"].num_bits_w == 8
    w2 = numpy_helper.to_array(next(t for t in onnx.load(tmp_path / "a" / "m_fake_quant_model.onnx").graph.initializer
                                    if t.name == "w2_quantized"))
    assert max(len(np.unique(w2[c])) for c in range(w2.shape[0])) <= 16  # 16 levels per channel
    with pytest.raises(ConfigError, match="record layer 'conv2': num_bits_w 4 cannot be rebuilt from a record"):
        amct.convert_model(str(onnx_file), None, str(tmp_path / "a" / "m_quant_param_record.txt"), str(tmp_path / "b" / "m"))


def test_update_bn_renormalizes_snq_layers_and_dumps_its_statistics(onnx_file, tmp_path):
    pytest.importorskip("int8kit.weights.snq", reason="the SNQ core (weights/snq.py) is not in this checkout")
    planned = {}
    for update in (False, True):
        amct.create_quant_config(str(tmp_path / "config.json"), str(onnx_file), None, 3)
        doc = json.loads((tmp_path / "config.json").read_text())
        for layer in ("conv2", "conv3"):
            doc[layer]["weight_quant_params"] = {"wts_algo": "snq_quantize", "num_bits": 4, "init_algo": "gaussian"}
        doc.update(update_bn=update, bn_update_config={"bn_update_iterations": 4, "bn_moving_average_fraction": 0.5,
                                                        "bn_dump_dir": str(tmp_path / "bn_data")})
        (tmp_path / "config.json").write_text(json.dumps(doc))
        graph = amct.init(str(tmp_path / "config.json"), str(onnx_file), None, str(tmp_path / "rec.txt"))
        sess = amct.calibration_session(graph)
        for batch in batches(3):
            sess.run(None, {"x": batch})
        assert len(sess.kept) == (3 if update else 0)  # at most bn_update_iterations batches are kept
        amct.save_model(graph, "Both", str(tmp_path / f"out{update}" / "m"))
        planned[update] = {e.key: list(e.value.scale_w) for e in read_record(tmp_path / f"out{update}" / "m_quant_param_record.txt").record}
    assert (tmp_path / "bn_data" / "bn_update.npz").is_file()
    assert planned[True]["conv2"] != planned[False]["conv2"]  # the update folds its gains into the weight scales


def test_a_quantized_network_output_is_recorded_at_its_producer(tmp_path):
    """conv1-relu-conv2 with conv2 writing the model output: QLinearConv quantizes that output, which
    no layer reads, so the record holds it at conv2 with index -1 (output 0)."""
    w = lambda name, shape: numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1])],
        "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 12, 12])],
        [w("w1", (8, 3, 3, 3)), w("b1", (8,)), w("w2", (4, 8, 3, 3)), w("b2", (4,))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "head.onnx")
    g = sample_flow(tmp_path / "head.onnx", None, tmp_path)
    amct.save_model(g, "Both", str(tmp_path / "a" / "m"))
    record = {e.key: e.value for e in read_record(tmp_path / "a" / "m_quant_param_record.txt").record}
    assert [d.index for d in record["conv2"].record_d] == [0, -1]
    amct.convert_model(str(tmp_path / "head.onnx"), None, str(tmp_path / "a" / "m_quant_param_record.txt"), str(tmp_path / "b" / "m"))
    assert (tmp_path / "a" / "m_fake_quant_model.onnx").read_bytes() == (tmp_path / "b" / "m_fake_quant_model.onnx").read_bytes()


def test_a_large_batch_runs_in_pieces_with_the_same_outputs_and_statistics(onnx_file, tmp_path):
    from int8kit.runtime.chunking import Chunker

    whole = sample_flow(onnx_file, None, tmp_path, batch_num=2, runs=0).session
    amct.create_quant_config(str(tmp_path / "c2.json"), str(onnx_file), None, 2)
    cut = amct.calibration_session(amct.init(str(tmp_path / "c2.json"), str(onnx_file), None, str(tmp_path / "r.txt")))
    cut._chunker = Chunker(budget=1 << 14)  # a few samples per piece
    for batch in batches(2, size=16):
        a, b = whole.run(None, {"x": batch}), cut.run(None, {"x": batch})
        assert np.array_equal(a[0], b[0])
    s1, s2 = whole.stats("conv1"), cut.stats("conv1")
    assert cut._chunker.step < 16 and s1.samples == s2.samples == 32
    for name, t in s1.tensors.items():
        assert np.array_equal(t.hist.counts, s2.tensors[name].hist.counts) and t.hist.max == s2.tensors[name].hist.max
