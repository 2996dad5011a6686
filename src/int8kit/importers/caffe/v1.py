"""Upgrade the old V1 layer format (``layers { type: CONVOLUTION ... }``) to LayerParameter."""

from __future__ import annotations

from collections.abc import Iterable

from int8kit.errors import ModelError
from int8kit.importers.caffe import proto

_V1 = proto.V1LayerParameter
# V1 enum value -> the layer type string of the current format.
_TYPE_NAMES = {
    _V1.ABSVAL: "AbsVal", _V1.ACCURACY: "Accuracy", _V1.ARGMAX: "ArgMax", _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat", _V1.CONTRASTIVE_LOSS: "ContrastiveLoss", _V1.CONVOLUTION: "Convolution",
    _V1.DATA: "Data", _V1.DECONVOLUTION: "Deconvolution", _V1.DROPOUT: "Dropout",
    _V1.DUMMY_DATA: "DummyData", _V1.EUCLIDEAN_LOSS: "EuclideanLoss", _V1.ELTWISE: "Eltwise",
    _V1.EXP: "Exp", _V1.FLATTEN: "Flatten", _V1.HDF5_DATA: "HDF5Data", _V1.HDF5_OUTPUT: "HDF5Output",
    _V1.HINGE_LOSS: "HingeLoss", _V1.IM2COL: "Im2col", _V1.IMAGE_DATA: "ImageData",
    _V1.INFOGAIN_LOSS: "InfogainLoss", _V1.INNER_PRODUCT: "InnerProduct", _V1.LRN: "LRN",
    _V1.MEMORY_DATA: "MemoryData", _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN", _V1.POOLING: "Pooling", _V1.POWER: "Power", _V1.RELU: "ReLU",
    _V1.SIGMOID: "Sigmoid", _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    _V1.SILENCE: "Silence", _V1.SOFTMAX: "Softmax", _V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    _V1.SPLIT: "Split", _V1.SLICE: "Slice", _V1.TANH: "TanH", _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}
_LAYER_FIELDS = {f.name for f in proto.LayerParameter.DESCRIPTOR.fields}
_COPIED = ("name", "bottom", "top", "include", "exclude", "blobs", "loss_weight")


def upgrade_v1_layer(old) -> proto.LayerParameter:
    """One V1LayerParameter as a LayerParameter (type name, blobs and every *_param carried over)."""
    if old.type not in _TYPE_NAMES:
        raise ModelError(f"V1 Caffe layer {old.name!r} has type number {old.type}, which int8kit does not know; "
                         "upgrade the prototxt with Caffe's upgrade_net_proto_text tool.")
    new = proto.LayerParameter(type=_TYPE_NAMES[old.type])
    for field, value in old.ListFields():
        if field.name == "name":
            new.name = value
        elif field.name in _COPIED:  # the other copied fields are repeated
            getattr(new, field.name).extend(value)
        elif field.name.endswith("_param") and field.name in _LAYER_FIELDS:
            # same message type in both formats: copy through the wire format
            getattr(new, field.name).ParseFromString(value.SerializeToString())
    return new


def upgrade_v1_layers(layers: Iterable) -> list[proto.LayerParameter]:
    """Upgrade every V1 layer of a net (an empty list for nets in the current format)."""
    return [upgrade_v1_layer(layer) for layer in layers]
