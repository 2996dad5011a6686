"""Model import: registry and detection, ONNX normalisation, --compare, and `int8kit convert` on tiny ONNX models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit import api
from int8kit.cli import main
from int8kit.errors import ConfigError, ModelError
from int8kit.importers import detect_framework, get_importer, load_any_model, normalize_framework, resolve
from int8kit.importers import onnx_import
from int8kit.importers.common import parse_input_shapes, parse_names
from int8kit.importers.compare import compare


def tiny_onnx(opset: int = 11, batch: int | str = "N", seed: int = 0) -> onnx.ModelProto:
    """Conv(3->4) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3), named nodes."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [w, b, fw, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.fixture()
def tiny_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_onnx(), path)
    return path


# --- registry, detection, errors -------------------------------------------------------------------

@pytest.mark.parametrize("name, framework", [
    ("deploy.prototxt", "caffe"), ("deploy.prototxt.txt", "caffe"), ("yolov3.cfg", "darknet"),
    ("m.pt", "pytorch"), ("m.pth", "pytorch"), ("m.torchscript", "pytorch"), ("m.onnx", "onnx"),
    ("frozen.pb", "tensorflow"), ("m.tflite", "tflite"), ("m.pdmodel", "paddle"),
    ("pkg.models:build", "pytorch"),
])
def test_detect_framework_by_extension(name, framework):
    assert detect_framework(name) == framework


def test_detect_saved_model_folder_and_unknown(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert detect_framework(tmp_path) == "tensorflow"
    with pytest.raises(ConfigError, match="--framework"):
        detect_framework(tmp_path / "model.bin")


def test_mxnet_is_unsupported_with_reason():
    with pytest.raises(ConfigError, match="retired.*mxnet.onnx"):
        normalize_framework("mxnet")
    with pytest.raises(ConfigError, match="not known"):
        normalize_framework("keras3")


def test_missing_importer_module_is_a_clear_error(monkeypatch):
    from int8kit import importers

    monkeypatch.setitem(importers.FRAMEWORKS, "caffe", "int8kit.importers.not_written_yet")
    with pytest.raises(ConfigError, match="caffe importer .* not part of this int8kit"):
        get_importer("caffe")
    monkeypatch.setitem(importers.FRAMEWORKS, "caffe", "int8kit.importers.common")  # a module without convert()
    with pytest.raises(ConfigError, match="not complete"):
        get_importer("caffe")


def test_external_converter_missing_names_the_package(tmp_path):
    pytest.importorskip("onnx")
    import importlib.util

    if importlib.util.find_spec("tflite2onnx") is not None:
        pytest.skip("tflite2onnx is installed here; the missing-package message cannot be seen")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(ConfigError, match="pip install tflite2onnx"):
        load_any_model(model)


def test_caffe_weights_found_beside_or_asked_for(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text("name: 'x'\n")
    with pytest.raises(ConfigError, match="--weights model.caffemodel"):
        resolve(proto)
    (tmp_path / "deploy.caffemodel").write_bytes(b"")
    assert resolve(proto) == ("caffe", proto, tmp_path / "deploy.caffemodel")
    with pytest.raises(ModelError, match="does not exist"):
        resolve(tmp_path / "missing.prototxt")


def test_parse_shapes_and_names():
    assert parse_input_shapes("(1,3,224,224);(1,4)") == [(1, 3, 224, 224), (1, 4)]
    assert parse_input_shapes("1,3,8,8") == [(1, 3, 8, 8)]
    assert parse_input_shapes([1, 3, 8, 8]) == [(1, 3, 8, 8)]
    assert parse_names(" a, b ,") == ["a", "b"]
    with pytest.raises(ConfigError, match="not a shape"):
        parse_input_shapes("(1,3,x)")
    with pytest.raises(ConfigError, match="positive integers"):
        parse_input_shapes("(1,0,3)")


# --- ONNX normalisation ----------------------------------------------------------------------------

def test_onnx_convert_upgrades_opset_and_keeps_numbers(tiny_path):
    before = onnx.load(tiny_path).SerializeToString()
    converted = onnx_import.convert(tiny_path)
    assert onnx_import._opset(converted) >= onnx_import.MIN_OPSET
    assert onnx.load(tiny_path).SerializeToString() == before  # the input file is untouched
    result = compare("onnx", tiny_path, onnx_model=converted, samples=4, progress=False)
    assert result.ok and result.outputs[0].max_abs_error < 1e-5 and result.outputs[0].cosine > 0.99999


def test_onnx_convert_fixes_shapes_renames_and_frees_batch(tiny_path, caplog):
    fixed = onnx_import.convert(tiny_path, input_shapes=[(2, 3, 8, 8)], input_names=["image"])
    dims = [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert fixed.graph.input[0].name == "image" and dims == [2, 3, 8, 8]
    assert [d.dim_value for d in fixed.graph.output[0].type.tensor_type.shape.dim] == [2, 3]  # re-inferred
    dynamic = onnx_import.convert(tiny_onnx(batch=1), dynamic_batch=True)
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    with pytest.raises(ConfigError, match="rank 4"):
        onnx_import.convert(tiny_path, input_shapes=[(1, 3, 8)])
    with pytest.raises(ConfigError, match="2 shapes but the model has 1"):
        onnx_import.convert(tiny_path, input_shapes=[(1, 3, 8, 8), (1, 2)])
    onnx_import.convert(tiny_path, input_shapes=[(1, 3, 16, 16)])  # a fully convolutional resize is allowed...
    assert "fixed to [None, 3, 8, 8]" in caplog.text  # ...but said


def test_unnamed_nodes_are_named_and_compared(tmp_path):
    model = tiny_onnx(opset=13)
    for node in model.graph.node[1:3]:
        node.name = ""
    path = tmp_path / "unnamed.onnx"
    onnx.save(model, path)
    converted = onnx_import.convert(path)
    assert [n.name for n in converted.graph.node] == ["conv1", "Relu_1", "GlobalAveragePool_2", "flat", "fc"]
    result = compare("onnx", path, onnx_model=converted, layers=True, samples=2, progress=False)
    assert [d.name for d in result.layers] == ["conv1", "Relu_1", "GlobalAveragePool_2", "flat", "fc"] and result.ok


def test_onnx_convert_rejects_invalid_model(tmp_path):
    bad = tiny_onnx(opset=13)
    bad.graph.node[1].input[0] = "nowhere"  # a dangling input
    path = tmp_path / "bad.onnx"
    onnx.save(bad, path)
    with pytest.raises(ModelError, match="ONNX checker"):
        onnx_import.convert(path)


# --- compare ---------------------------------------------------------------------------------------

def _perturbed(model: onnx.ModelProto, scale: float = 1.05) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fw = next(t for t in out.graph.initializer if t.name == "fw")
    fw.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fw) * scale, "fw"))
    return out


def test_compare_flags_a_wrong_conversion_with_layers(tiny_path):
    good = onnx_import.convert(tiny_path)
    bad = _perturbed(good)
    result = compare("onnx", tiny_path, onnx_model=bad, layers=True, samples=4, progress=False)
    assert not result.ok
    out = result.outputs[0]
    assert out.name == "y" and not out.ok and out.max_rel_error > 1e-3
    layers = {d.name: d for d in result.layers}
    assert set(layers) == {"conv1", "relu1", "pool", "flat", "fc"}
    assert layers["conv1"].ok and layers["conv1"].max_abs_error < 1e-5  # the error starts at fc
    assert not layers["fc"].ok
    table = result.to_table()
    assert "FAIL" in table and "conv1" in table
    d = result.to_dict()
    assert d["ok"] is False and d["samples"] == 4 and d["random_data"] is True


def test_compare_on_user_data_and_named_layers(tiny_path, tmp_path):
    data = np.random.default_rng(3).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "d.npy", data)
    result = compare("onnx", tiny_path, data=tmp_path / "d.npy", layers=["relu1"], samples=None, progress=False)
    assert result.ok and result.samples == 5 and not result.random_data
    assert [d.name for d in result.layers] == ["relu1"]
    with pytest.raises(ConfigError, match="did you mean"):
        compare("onnx", tiny_path, layers=["relu2"], progress=False)


def test_compare_needs_shapes_for_random_data(tmp_path):
    model = tiny_onnx()
    model.graph.input[0].type.tensor_type.shape.dim[2].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    with pytest.raises(ConfigError, match="--input-shapes or --data"):
        compare("onnx", path, progress=False)
    assert compare("onnx", path, input_shapes="(2,3,8,8)", samples=2, progress=False).ok


# --- CLI and API -----------------------------------------------------------------------------------

def test_cli_convert_onnx_compare_ok_and_json(tiny_path, tmp_path, capsys):
    out = tmp_path / "out" / "model.onnx"
    assert main(["convert", "--model", str(tiny_path), "-o", str(out), "--compare-all", "--no-progress", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["framework"] == "onnx" and payload["compare"]["ok"] is True
    assert len(payload["compare"]["layers"]) == 5
    assert onnx_import._opset(onnx.load(out)) >= 13


def test_cli_convert_exit_1_past_tolerance(tiny_path, tmp_path, capsys, monkeypatch):
    real = onnx_import.convert
    monkeypatch.setattr(onnx_import, "convert", lambda *a, **k: _perturbed(real(*a, **k)))  # a buggy converter
    code = main(["convert", "--model", str(tiny_path), "-o", str(tmp_path / "m.onnx"), "--compare", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAIL" in captured.out and "max rel err" in captured.out and "--tolerance" in captured.err
    # a loose enough tolerance accepts the same model
    assert main(["convert", "--model", str(tiny_path), "-o", str(tmp_path / "m.onnx"), "--compare",
                 "--tolerance", "0.5", "--no-progress"]) == 0


def test_cli_convert_user_errors_exit_2(tmp_path, capsys):
    assert main(["convert", "--model", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", "--model", "m.json", "--framework", "mxnet", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "retired" in capsys.readouterr().err


def test_api_convert_and_quantize_take_framework_files(tiny_path, tmp_path):
    result = api.convert(tiny_path, output=tmp_path / "c.onnx", compare=True, progress=False)
    assert result.path.exists() and result.compare.ok and result.framework == "onnx"
    data = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    q = api.quantize(tiny_path, data, framework="onnx", input_shapes="(1,3,8,8)", output_dir=tmp_path / "q",
                     progress=False)
    int8 = onnx.load(q.int8_model)
    assert [d.dim_value for d in int8.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 8, 8]
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)


def test_detection_rows_that_tie_in_confidence_compare_in_any_order():
    from int8kit.importers.compare import TensorDiff

    rng = np.random.default_rng(0)
    rows = np.zeros((1, 1, 6, 7), np.float32)
    rows[0, 0, :4, 1] = 1
    rows[0, 0, :4, 2] = [0.9, 0.5, 0.08042, 0.08042]  # two detections tie in confidence
    rows[0, 0, :4, 3:] = rng.uniform(0, 1, (4, 4))
    swapped = rows.copy()
    swapped[0, 0, [2, 3]] = rows[0, 0, [3, 2]]
    same = TensorDiff("detection_out", "output")
    same.update(rows, swapped)
    assert same.max_abs_error == 0.0 and same.cosine == pytest.approx(1.0)
    wrong = swapped.copy()
    wrong[0, 0, 2, 3] += 0.5  # a real box error still shows
    diff = TensorDiff("detection_out", "output")
    diff.update(rows, wrong)
    assert diff.max_abs_error == pytest.approx(0.5, abs=1e-6)
