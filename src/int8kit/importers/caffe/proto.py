"""The Caffe message classes (from int8kit's own ``caffe.proto``) and readers for Caffe files.

The classes are built at import time from ``caffe.proto`` in a private descriptor pool, so they
work with every protobuf runtime from 4 to 7 and never clash with another ``caffe_pb2`` that a
user has imported.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from int8kit.errors import DataError, ModelError
from int8kit.importers.caffe.protoparse import ProtoFile

log = logging.getLogger("int8kit")

_CAFFE = ProtoFile(Path(__file__).with_name("caffe.proto"), "int8kit/caffe.proto")


def message_class(name: str) -> type[Message]:
    """The message class for ``name`` (e.g. ``"LayerParameter"`` or ``"PriorBoxParameter"``)."""
    return _CAFFE.message(name)


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
BlobProto = message_class("BlobProto")
BlobProtoVector = message_class("BlobProtoVector")
BlobShape = message_class("BlobShape")
Datum = message_class("Datum")
TransformationParameter = message_class("TransformationParameter")
TransformOp = message_class("TransformOp")
DataParameter = message_class("DataParameter")
ConvolutionParameter = message_class("ConvolutionParameter")
InnerProductParameter = message_class("InnerProductParameter")
BatchNormParameter = message_class("BatchNormParameter")
ScaleParameter = message_class("ScaleParameter")
BiasParameter = message_class("BiasParameter")
ReLUParameter = message_class("ReLUParameter")
ReLU6Parameter = message_class("ReLU6Parameter")
PReLUParameter = message_class("PReLUParameter")
ELUParameter = message_class("ELUParameter")
PowerParameter = message_class("PowerParameter")
PoolingParameter = message_class("PoolingParameter")
EltwiseParameter = message_class("EltwiseParameter")
ConcatParameter = message_class("ConcatParameter")
SliceParameter = message_class("SliceParameter")
FlattenParameter = message_class("FlattenParameter")
ReshapeParameter = message_class("ReshapeParameter")
PermuteParameter = message_class("PermuteParameter")
SoftmaxParameter = message_class("SoftmaxParameter")
LRNParameter = message_class("LRNParameter")
DropoutParameter = message_class("DropoutParameter")
CropParameter = message_class("CropParameter")
InputParameter = message_class("InputParameter")
InterpParameter = message_class("InterpParameter")
UpsampleParameter = message_class("UpsampleParameter")
ShuffleChannelParameter = message_class("ShuffleChannelParameter")
NormalizeParameter = message_class("NormalizeParameter")
PriorBoxParameter = message_class("PriorBoxParameter")
DetectionOutputParameter = message_class("DetectionOutputParameter")
NonMaximumSuppressionParameter = message_class("NonMaximumSuppressionParameter")
FillerParameter = message_class("FillerParameter")
TRAIN = _CAFFE.enum_value("Phase", "TRAIN")
TEST = _CAFFE.enum_value("Phase", "TEST")

_UNKNOWN = re.compile(r'has no field named "?([\w.]+)"?')
_LINE = re.compile(r"^(\d+):(\d+)")


def _read(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"The Caffe {what} {str(p)!r} does not exist; pass the path of an existing file.")
    return p.read_bytes()


def parse_prototxt(text: str, message: Message, source: str = "<text>") -> Message:
    """Parse Caffe text format into ``message``; unknown fields are skipped with one warning."""
    try:
        text_format.Parse(text, message)
        return message
    except text_format.ParseError as err:
        unknown = _UNKNOWN.search(str(err))
        if unknown is None:
            raise _located(err, source) from None
    message.Clear()
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except text_format.ParseError as err:
        raise _located(err, source) from None
    log.warning("%s: skipped fields int8kit does not know (first: %r); they are ignored", source,
                unknown.group(1))
    return message


def _located(err: text_format.ParseError, source: str) -> ModelError:
    m = _LINE.match(str(err))
    where = f"{source}:{m.group(1)}" if m else source
    detail = _LINE.sub("", str(err)).lstrip(" :")
    return ModelError(f"The Caffe prototxt {where} could not be parsed: {detail}; "
                      "fix the text there (it must be a Caffe NetParameter in protobuf text format).")


def read_prototxt(path: str | os.PathLike) -> NetParameter:
    """Read a Caffe network definition (``deploy.prototxt``, text format)."""
    data = _read(path, "prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"The Caffe prototxt {str(path)!r} is not UTF-8 text; pass the text network "
                         "definition (deploy.prototxt), not the binary .caffemodel.") from None
    return parse_prototxt(text, NetParameter(), str(path))


def read_caffemodel(path: str | os.PathLike) -> NetParameter:
    """Read Caffe trained weights (``.caffemodel``, binary NetParameter)."""
    data = _read(path, "caffemodel")
    net = NetParameter()
    try:
        net.ParseFromString(data)
    except DecodeError as err:
        raise ModelError(f"The Caffe caffemodel {str(path)!r} is not a binary Caffe NetParameter ({err}); "
                         "pass the trained .caffemodel file, not the prototxt.") from None
    return net


def blob_to_array(blob: BlobProto) -> np.ndarray:
    """A blob's values as a float32 array in its shape (``shape``, or the legacy 4-D fields)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
        if blob.num == blob.channels == blob.height == blob.width == 0:
            shape = (0,)
    values = blob.double_data if len(blob.double_data) else blob.data
    arr = np.asarray(values, dtype=np.float32)
    count = int(np.prod(shape)) if shape else 1
    if arr.size != count:
        raise ModelError(f"A Caffe blob declares shape {shape} ({count} values) but holds {arr.size}; "
                         "the weights file is damaged or belongs to another network.")
    return arr.reshape(shape)


def array_to_blob(arr: np.ndarray) -> BlobProto:
    """A float32 array as a BlobProto with an N-D ``shape`` (used to write test models)."""
    blob = BlobProto()
    blob.shape.dim.extend(int(d) for d in np.shape(arr))
    blob.data.extend(np.asarray(arr, dtype=np.float32).ravel().tolist())
    return blob


def read_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """Read a Caffe mean file (``mean.binaryproto``): one BlobProto, returned as C x H x W."""
    blob = BlobProto()
    try:
        blob.ParseFromString(_read(path, "mean file"))
    except DecodeError as err:
        raise DataError(f"The Caffe mean file {str(path)!r} is not a binary BlobProto ({err}); "
                        "pass a .binaryproto mean file.") from None
    arr = blob_to_array(blob)
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
