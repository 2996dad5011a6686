"""int8kit's own Caffe protobuf definition: binary and text round trips, readers and errors."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from int8kit.errors import ModelError
from int8kit.importers.caffe import proto


def _net() -> proto.NetParameter:
    net = proto.NetParameter(name="tiny")
    net.input.append("data")
    net.input_shape.add().dim.extend([1, 3, 8, 8])
    conv = net.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    conv.blobs.append(proto.array_to_blob(np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3)))
    prior = net.layer.add(name="pb", type="PriorBox", bottom=["conv1", "data"], top=["pb"])
    prior.prior_box_param.min_size.append(30.0)
    prior.prior_box_param.variance.extend([0.1, 0.1, 0.2, 0.2])
    det = net.layer.add(name="det", type="DetectionOutput")
    det.detection_output_param.code_type = proto.PriorBoxParameter.CENTER_SIZE
    det.detection_output_param.nms_param.top_k = 400
    return net


def test_netparameter_binary_and_text_round_trip():
    net = _net()
    again = proto.NetParameter.FromString(net.SerializeToString())
    assert again == net
    text = text_format.MessageToString(net)
    assert "code_type: CENTER_SIZE" in text
    assert proto.parse_prototxt(text, proto.NetParameter()) == net
    w = proto.blob_to_array(again.layer[0].blobs[0])
    assert w.shape == (4, 3, 3, 3) and w[3, 2, 2, 2] == 107


def test_defaults_follow_caffe():
    conv = proto.ConvolutionParameter()
    assert conv.bias_term is True and conv.group == 1
    assert proto.PoolingParameter().pool == proto.PoolingParameter.MAX
    assert proto.BatchNormParameter().eps == pytest.approx(1e-5)
    assert proto.DetectionOutputParameter().keep_top_k == -1
    assert proto.NormalizeParameter().channel_shared is True


def test_datum_round_trip_and_transform_op():
    datum = proto.Datum(channels=3, height=2, width=2, data=bytes(range(12)), label=7)
    assert proto.Datum.FromString(datum.SerializeToString()) == datum
    layer = proto.LayerParameter()
    proto.parse_prototxt(
        'name: "data" type: "Data" transform_param { transform_op { op: RESIZE resize_h: 331 resize_w: 331 }'
        " transform_op { op: STAND mean_value: 128 mean_value: 128 mean_value: 128 scale: 0.0078125 } }"
        ' data_param { source: "db" batch_size: 0 backend: LMDB }', layer)
    ops = layer.transform_param.transform_op
    assert [op.op for op in ops] == [proto.TransformOp.RESIZE, proto.TransformOp.STAND]
    assert ops[0].resize_h == 331 and list(ops[1].mean_value) == [128, 128, 128]
    assert layer.data_param.backend == proto.DataParameter.LMDB


def test_legacy_blob_shape_and_double_data():
    blob = proto.BlobProto(num=1, channels=2, height=1, width=2)
    blob.double_data.extend([1.0, 2.0, 3.0, 4.0])
    assert proto.blob_to_array(blob).shape == (1, 2, 1, 2)
    blob.double_data.append(5.0)
    with pytest.raises(ModelError, match="holds 5"):
        proto.blob_to_array(blob)


def test_files_and_errors(tmp_path, caplog):
    net = _net()
    (tmp_path / "w.caffemodel").write_bytes(net.SerializeToString())
    assert proto.read_caffemodel(tmp_path / "w.caffemodel") == net
    (tmp_path / "bad.prototxt").write_text('name: "x"\nlayer {\n  name: "a"\n  type: 3 4\n}\n')
    with pytest.raises(ModelError, match=r"bad.prototxt:4"):
        proto.read_prototxt(tmp_path / "bad.prototxt")
    (tmp_path / "extra.prototxt").write_text('name: "x"\nlayer { name: "a" fancy_param { k: 1 } }\n')
    assert proto.read_prototxt(tmp_path / "extra.prototxt").layer[0].name == "a"
    assert "fancy_param" in caplog.text
    with pytest.raises(ModelError, match="does not exist"):
        proto.read_prototxt(tmp_path / "missing.prototxt")
    mean = proto.array_to_blob(np.ones((1, 3, 2, 2), np.float32) * 5)
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    assert proto.read_binaryproto(tmp_path / "mean.binaryproto").shape == (3, 2, 2)


def test_v1_layers_parse():
    net = proto.parse_prototxt(
        'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" convolution_param { num_output: 2 } }',
        proto.NetParameter())
    assert net.layers[0].type == proto.V1LayerParameter.CONVOLUTION
