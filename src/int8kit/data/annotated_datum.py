"""SSD-Caffe ``AnnotatedDatum`` records (the LMDBs behind an AnnotatedData layer): image plus boxes.

Only the messages SSD adds are defined here; the image inside stays a Caffe ``Datum`` from
int8kit's ``caffe.proto``. ``datum`` is declared as bytes, which is wire-identical to the embedded
message, so it is parsed by that one Datum definition. Enums are read as their int32 values.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory

from int8kit.errors import DataError
from int8kit.importers.caffe.protoparse import parse_proto

_PROTO = """
syntax = "proto2";
package int8kit.ssd;
message NormalizedBBox {
  optional float xmin = 1;
  optional float ymin = 2;
  optional float xmax = 3;
  optional float ymax = 4;
  optional int32 label = 5;
  optional bool difficult = 6;
  optional float score = 7;
  optional float size = 8;
}
message Annotation {
  optional int32 instance_id = 1 [default = 0];
  optional NormalizedBBox bbox = 2;
}
message AnnotationGroup {
  optional int32 group_label = 1;
  repeated Annotation annotation = 2;
}
message AnnotatedDatum {
  optional bytes datum = 1;
  optional int32 type = 2;
  repeated AnnotationGroup annotation_group = 3;
}
"""

_POOL = descriptor_pool.DescriptorPool()
_FILE = parse_proto(_PROTO, "int8kit/ssd_annotated.proto")
_POOL.AddSerializedFile(_FILE.SerializeToString())


def _cls(name: str) -> Any:
    desc = _POOL.FindMessageTypeByName(f"int8kit.ssd.{name}")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(_POOL).GetPrototype(desc)  # pragma: no cover


AnnotatedDatum = _cls("AnnotatedDatum")
NormalizedBBox = _cls("NormalizedBBox")


def is_annotated(value: bytes | memoryview) -> bool:
    """An AnnotatedDatum starts with field 1 as a length-delimited message (0x0A); a Datum never does."""
    return len(value) > 0 and bytes(value[:1]) == b"\x0a"


def split_annotated(value: bytes, *, where: str) -> tuple[bytes, list[tuple]]:
    """The inner Datum bytes and the boxes ``(group_label, xmin, ymin, xmax, ymax)`` (normalised 0-1)."""
    msg = AnnotatedDatum()
    try:
        msg.ParseFromString(value)
    except Exception as exc:
        raise DataError(f"{where} is not a readable AnnotatedDatum ({exc}); re-create the LMDB.") from None
    boxes = [
        (int(g.group_label), float(a.bbox.xmin), float(a.bbox.ymin), float(a.bbox.xmax), float(a.bbox.ymax))
        for g in msg.annotation_group
        for a in g.annotation
    ]
    return msg.datum, boxes
