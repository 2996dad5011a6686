"""Caffe conversion as a whole: input forms, V1 format, names, custom layers, errors, the reference."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_nets import CaffeNet, assert_close, feeds_for, run_onnx
from google.protobuf import text_format

from int8kit.errors import ConfigError, ModelError
from int8kit.importers.caffe import convert, proto, reference, register_layer, supported_types, unregister_layer

R = np.random.default_rng(3)


def _legacy_blob(arr: np.ndarray) -> proto.BlobProto:
    """A blob in the old layout: num/channels/height/width, 1-padded on the left."""
    shape = (1,) * (4 - arr.ndim) + arr.shape
    blob = proto.BlobProto(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    return blob


def _v1_net(tmp_path):
    net = text_format.Parse("""
        name: "v1" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
        layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
                 convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
        layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
                 pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
        layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
        layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
    """, proto.NetParameter())
    weights = proto.NetParameter()
    weights.CopyFrom(net)
    weights.layers[0].blobs.extend([_legacy_blob(R.standard_normal((4, 3, 3, 3))), _legacy_blob(R.standard_normal(4))])
    weights.layers[3].blobs.extend([_legacy_blob(R.standard_normal((5, 64))), _legacy_blob(R.standard_normal(5))])
    (tmp_path / "v1.prototxt").write_text(text_format.MessageToString(net))
    (tmp_path / "v1.caffemodel").write_bytes(weights.SerializeToString())
    return tmp_path / "v1.prototxt", tmp_path / "v1.caffemodel"


def test_v1_format_with_legacy_blobs_matches_opencv(tmp_path):
    pytest.importorskip("cv2")
    model, weights = _v1_net(tmp_path)
    onnx_model = convert(model, weights)
    assert [n.name for n in onnx_model.graph.node if n.op_type == "Conv"] == ["conv1"]
    x = R.standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = run_onnx(onnx_model, {"data": x})
    want = reference(model, weights).run({"data": x})
    assert list(got) == list(want) == ["prob"]
    assert_close(got["prob"], want["prob"], 1e-5)
    # per-layer outputs of the reference, keyed by layer name
    layers = reference(model, weights).run({"data": x}, layers=["conv1", "relu1", "fc", "no_such_layer"])
    assert sorted(layers) == ["conv1", "fc", "relu1"]
    assert (layers["relu1"] >= 0).all() and (layers["conv1"] < 0).any()


def test_input_forms_and_input_shapes(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("AbsVal", "a", "data")
    model, weights = net.write(tmp_path)
    m = convert(model, weights, input_shapes={"data": [2, 3, 6, 6]}, input_names=["image"])
    assert m.graph.input[0].name == "image"
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 6, 6]
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == [2, 3, 6, 6]
    assert convert(model, weights, input_shapes=[1, 3, 5, 5]).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 5
    assert convert(model, weights, input_shapes=[(1, 3, 7, 7)]).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 7
    with pytest.raises(ConfigError, match="one shape per input"):
        convert(model, weights, input_shapes=[(1, 3, 7, 7), (1, 2)])
    with pytest.raises(ConfigError, match="not inputs"):
        convert(model, weights, input_shapes={"img": [1, 3, 4, 4]})
    with pytest.raises(ConfigError, match="Unknown Caffe import option"):
        convert(model, weights, fancy=True)
    (tmp_path / "legacy.prototxt").write_text(
        'input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
        'layer { name: "t" type: "TanH" bottom: "x" top: "t" }\n')
    assert convert(tmp_path / "legacy.prototxt").graph.input[0].name == "x"


def test_data_layer_input_and_phases(tmp_path):
    (tmp_path / "data.prototxt").write_text("""
        layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
                transform_param { transform_op { op: RESIZE resize_h: 20 resize_w: 24 }
                                  transform_op { op: STAND mean_value: 128 scale: 0.01 } }
                data_param { source: "nowhere" backend: LMDB batch_size: 1 } }
        layer { name: "train_data" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
        layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }
        layer { name: "drop" type: "Dropout" bottom: "s" top: "s" exclude { phase: TEST } }
    """)
    m = convert(tmp_path / "data.prototxt")
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 20, 24]
    assert [n.op_type for n in m.graph.node] == ["Sigmoid"]
    (tmp_path / "noshape.prototxt").write_text(
        'layer { name: "data" type: "Data" top: "data" data_param { source: "x" } }\n'
        'layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }\n')
    with pytest.raises(ModelError, match="input_shapes"):
        convert(tmp_path / "noshape.prototxt")
    assert convert(tmp_path / "noshape.prototxt", input_shapes=[1, 1, 5, 5]).graph.output[0].name == "s"


def test_data_layer_shape_from_its_lmdb(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        datum = proto.Datum(channels=3, height=5, width=6, data=bytes(90), label=1)
        txn.put(b"00000000", datum.SerializeToString())
    env.close()
    (tmp_path / "train.prototxt").write_text(
        'layer { name: "data" type: "Data" top: "data" top: "label" '
        'data_param { source: "db" backend: LMDB batch_size: 1 } }\n'
        'layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }\n')
    m = convert(tmp_path / "train.prototxt")
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 5, 6]


def test_net_ending_in_an_alias_layer_keeps_its_blob_name(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("TanH", "t", "data").add("Dropout", "drop", "t")
    model, weights = net.write(tmp_path)
    m = convert(model, weights)
    assert [o.name for o in m.graph.output] == ["drop"]
    x = feeds_for(net)["data"]
    assert_close(run_onnx(m, {"data": x})["drop"], np.tanh(x))


def test_unsupported_layer_names_layer_type_and_remedy(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("FancyOp", "fancy1", "data")
    model, weights = net.write(tmp_path)
    with pytest.raises(ModelError) as err:
        convert(model, weights)
    assert "'fancy1'" in str(err.value) and "'FancyOp'" in str(err.value) and "register_layer" in str(err.value)


def test_missing_weights_and_unknown_bottom_are_clear(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("Convolution", "conv", "data",
                                          params="convolution_param { num_output: 2 kernel_size: 1 }")
    model, _ = net.write(tmp_path)
    with pytest.raises(ModelError, match=r"'conv' \(Convolution\) needs its weights"):
        convert(model)
    net = CaffeNet(data=(1, 3, 4, 4)).add("ReLU", "r", "nothing")
    model, weights = net.write(tmp_path)
    with pytest.raises(ModelError, match="'nothing'"):
        convert(model, weights)


def test_register_custom_layer(tmp_path):
    @register_layer("MySwish")
    def my_swish(ctx):
        sig = ctx.node("Sigmoid", [ctx.inputs[0]])
        ctx.node("Mul", [ctx.inputs[0], sig], ctx.outputs[0])

    try:
        assert "MySwish" in supported_types()
        with pytest.raises(ValueError, match="already has a converter"):
            register_layer("MySwish")(lambda ctx: None)
        net = CaffeNet(data=(1, 3, 4, 4)).add("MySwish", "swish1", "data")
        model, weights = net.write(tmp_path)
        m = convert(model, weights)
        assert [n.name for n in m.graph.node] == ["swish1/Sigmoid", "swish1"]
        x = feeds_for(net)["data"]
        assert_close(run_onnx(m, {"data": x})["swish1"], x / (1 + np.exp(-x)))
    finally:
        unregister_layer("MySwish")
    assert "MySwish" not in supported_types()


def test_converter_errors_name_the_layer(tmp_path):
    net = CaffeNet(data=(1, 3, 4, 4)).add("Pooling", "pool", "data", params="pooling_param { pool: STOCHASTIC kernel_size: 2 }")
    model, weights = net.write(tmp_path)
    with pytest.raises(ModelError, match="'pool' \\(Pooling\\) uses STOCHASTIC"):
        convert(model, weights)
