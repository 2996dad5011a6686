"""SSD-Caffe ``AnnotatedDatum`` records (the LMDBs behind an AnnotatedData layer): image plus boxes.

The messages (``AnnotatedDatum``, ``AnnotationGroup``, ``NormalizedBBox``) live in int8kit's
``caffe.proto`` beside ``Datum``; enums are read as their int32 values.
"""

from __future__ import annotations

from int8kit.errors import DataError
from int8kit.importers.caffe.proto import message_class

AnnotatedDatum = message_class("AnnotatedDatum")
NormalizedBBox = message_class("NormalizedBBox")


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
    return msg.datum.SerializeToString(), boxes
