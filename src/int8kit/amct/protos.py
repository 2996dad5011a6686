"""The AMCT message classes (ScaleOffsetRecord, AMCTConfig), built at import time from int8kit's
own ``amct.proto`` in a private descriptor pool, the way the Caffe importer builds ``caffe.proto``."""

from __future__ import annotations

from pathlib import Path

from int8kit.importers.caffe.protoparse import ProtoFile

_AMCT = ProtoFile(Path(__file__).with_name("amct.proto"), "int8kit/amct.proto")
_message = _AMCT.message

ScaleOffsetRecord = _message("ScaleOffsetRecord")
SingleLayerRecord = _message("SingleLayerRecord")
ActivationQuantParam = _message("ActivationQuantParam")
AMCTConfig = _message("AMCTConfig")
CalibrationConfig = _message("CalibrationConfig")
