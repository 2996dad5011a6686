"""The AMCT message classes (ScaleOffsetRecord, AMCTConfig), built at import time from int8kit's
own ``amct.proto`` in a private descriptor pool, the way the Caffe importer builds ``caffe.proto``."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from int8kit.importers.caffe.protoparse import parse_proto

_PROTO = Path(__file__).with_name("amct.proto")
_POOL = descriptor_pool.DescriptorPool()
_FILE = parse_proto(_PROTO.read_text(encoding="utf-8"), "int8kit/amct.proto")
_POOL.AddSerializedFile(_FILE.SerializeToString())


def _message(name: str) -> type[Message]:
    desc = _POOL.FindMessageTypeByName(f"{_FILE.package}.{name}")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(_POOL).GetPrototype(desc)  # pragma: no cover


ScaleOffsetRecord = _message("ScaleOffsetRecord")
SingleLayerRecord = _message("SingleLayerRecord")
ActivationQuantParam = _message("ActivationQuantParam")
AMCTConfig = _message("AMCTConfig")
CalibrationConfig = _message("CalibrationConfig")
