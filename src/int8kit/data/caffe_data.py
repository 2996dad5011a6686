"""A Caffe prototxt's Data (or AnnotatedData) layer as a ``SampleSource``.

The layer names the LMDB (``data_param.source``, relative to the prototxt's folder) and its
preprocessing in one of two mutually exclusive ways (manual 000):

* Caffe's own ``transform_param`` fields, applied in Caffe's fixed order (its DataTransformer):
  centre crop (``crop_size`` or ``crop_h``/``crop_w``), subtract ``mean_file`` (taken at the
  crop's place in the full-size mean) or ``mean_value`` per channel, multiply by ``scale``; all
  on the datum's CHW BGR pixels. Calibration must be deterministic, so ``mirror`` is never
  applied and a crop is always the centre one (Caffe's TEST behaviour without random mirroring).
* an ordered ``transform_op`` list (RESIZE, CROP, STAND, PADRESIZE, BGR2RGB, TRANSPOSE), run in
  the listed order by the preprocessing pipeline of ``int8kit.data.preprocess``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.data.lmdb_source import LmdbSource
from int8kit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATA_LAYER_TYPES = ("Data", "AnnotatedData")
_FIXED_FIELDS = ("scale", "mirror", "crop_size", "crop_h", "crop_w", "mean_file", "bgr2rgb")
_INTERP = {0: "bilinear", 1: "nearest", 2: "bicubic", 3: "area"}  # TransformOp.InterpolationMode


def _in_phase(layer: Any, phase: int) -> bool:
    """Caffe's NetStateRule check reduced to phases: include rules select, exclude rules drop."""
    if layer.HasField("phase") and layer.phase != phase:
        return False
    if any(r.HasField("phase") and r.phase == phase for r in layer.exclude):
        return False
    rules = [r for r in layer.include if r.HasField("phase")]
    return not rules or any(r.phase == phase for r in rules)


def find_data_layer(net: Any, phase: str, where: str) -> Any:
    """The one Data/AnnotatedData layer of ``net`` active in ``phase`` ("TEST" or "TRAIN")."""
    if phase not in ("TEST", "TRAIN"):
        raise ConfigError(f"phase must be TEST or TRAIN, got '{phase}'.")
    code = 1 if phase == "TEST" else 0
    layers = [layer for layer in net.layer if layer.type in DATA_LAYER_TYPES and _in_phase(layer, code)]
    if not layers:
        raise ConfigError(
            f"{where} has no Data or AnnotatedData layer for phase {phase}; add one whose data_param.source names the LMDB."
        )
    if len(layers) > 1:
        raise ConfigError(f"{where} has {len(layers)} Data layers for phase {phase} ({', '.join(l.name for l in layers)}); keep one.")
    return layers[0]


class CaffeTransform:
    """Caffe's fixed-order DataTransformer on one CHW datum (TEST: centre crop, no mirror)."""

    def __init__(self, param: Any, mean: np.ndarray | None = None):
        self.scale = float(param.scale)
        self.mean_values = np.asarray(list(param.mean_value), dtype=np.float32)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        if self.mean is not None and self.mean_values.size:
            raise ConfigError("transform_param gives both mean_file and mean_value; Caffe accepts one of them, remove the other.")
        size = int(param.crop_size)
        self.crop = (size, size) if size else (int(param.crop_h), int(param.crop_w)) if param.crop_h or param.crop_w else None
        if self.crop and (self.crop[0] == 0 or self.crop[1] == 0):
            raise ConfigError(f"transform_param crop_h/crop_w must both be set, got {self.crop[0]}x{self.crop[1]}.")
        self.bgr2rgb = bool(param.bgr2rgb)
        if param.mirror:
            log.info("transform_param mirror is ignored: calibration and evaluation read every image unmirrored")

    def __call__(self, datum: np.ndarray) -> np.ndarray:
        x = datum.astype(np.float32)
        c, h, w = x.shape
        if self.mean is not None:
            mean = self.mean.reshape(self.mean.shape[-3:]) if self.mean.ndim == 4 else self.mean
            if mean.shape != x.shape:
                raise DataError(f"the mean_file holds a {mean.shape} mean but the datum is {x.shape}; Caffe needs the datum's full size.")
            x = x - mean  # before the crop: Caffe indexes the mean at the crop's place in the full image
        elif self.mean_values.size:
            if self.mean_values.size not in (1, c):
                raise DataError(f"transform_param has {self.mean_values.size} mean_value entries for {c}-channel data; give 1 or {c}.")
            x = x - np.resize(self.mean_values, c)[:, None, None]
        if self.crop:
            ch, cw = self.crop
            if ch > h or cw > w:
                raise DataError(f"crop {ch}x{cw} is larger than the {h}x{w} datum; lower crop_size or re-create the LMDB larger.")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, top : top + ch, left : left + cw]
        x = x * self.scale
        if self.bgr2rgb and c == 3:
            x = x[::-1]
        return np.ascontiguousarray(x, dtype=np.float32)


def transform_ops_to_pipeline(ops: Any) -> Any:
    """The manual's ordered ``transform_op`` list as a preprocessing ``Pipeline`` (same order)."""
    from int8kit.data.preprocess import pipeline_from_ops
    from int8kit.importers.caffe.proto import TransformOp

    out: list[tuple[str, dict[str, list]]] = []
    for i, op in enumerate(ops):
        name = TransformOp.Op.Name(op.op)
        interp = [_INTERP.get(int(op.interpolation), "bilinear")]
        if name == "RESIZE":
            params = {"resize_side": [op.resize_side]} if op.resize_side else {"resize_h": [op.resize_h], "resize_w": [op.resize_w]}
            out.append(("resize", {**params, "interpolation": interp}))
        elif name == "CROP":
            h, w = (op.crop_size, op.crop_size) if op.crop_size else (op.crop_h, op.crop_w)
            out.append(("crop", {"crop_h": [h], "crop_w": [w]}))
        elif name == "STAND":
            params: dict[str, list] = {"scale": [op.scale]}
            if len(op.mean_value):
                params["mean_value"] = list(op.mean_value)
            if len(op.std):
                params["std"] = list(op.std)
            if op.bgr2rgb:
                params["bgr2rgb"] = [True]
            out.append(("stand", params))
        elif name == "PADRESIZE":
            out.append(("letterbox", {"letterbox_h": [op.resize_h], "letterbox_w": [op.resize_w],
                                      "pad_value": [op.padding_value], "interpolation": interp}))
        elif name == "BGR2RGB":
            out.append(("bgr2rgb", {}))
        elif name == "TRANSPOSE":
            continue  # datums become CHW anyway (the pipeline's default NCHW layout)
        else:  # pragma: no cover - the enum has no other values
            raise ConfigError(f"transform_op {i} has op {name}, which int8kit does not implement.")
    return pipeline_from_ops(out)


def caffe_data_source(
    prototxt: str | os.PathLike, *, phase: str = "TEST", root: str | os.PathLike | None = None, workers: int | None = None
) -> LmdbSource:
    """Read the Data layer of ``prototxt``: its LMDB with its preprocessing, one sample per datum.

    ``root`` resolves a relative ``data_param.source`` (default: the prototxt's folder); the
    samples are float32 CHW arrays, labels come from the datums (or the LMDB's ``data.label``).
    """
    from int8kit.importers.caffe.proto import read_binaryproto, read_prototxt

    path = Path(prototxt)
    where = f"prototxt '{path}'"
    layer = find_data_layer(read_prototxt(path), phase, where)
    dp, tp = layer.data_param, layer.transform_param
    if not dp.source:
        raise ConfigError(f"the Data layer '{layer.name}' in {where} has no data_param.source; set it to the LMDB folder.")
    if dp.HasField("backend") and dp.backend == 0:
        raise ConfigError(f"the Data layer '{layer.name}' in {where} uses backend LEVELDB; int8kit reads LMDB, convert it (backend: LMDB).")
    base = Path(root) if root is not None else path.parent
    source = Path(dp.source) if Path(dp.source).is_absolute() else base / dp.source
    fixed = [f for f in _FIXED_FIELDS if tp.HasField(f)] + (["mean_value"] if len(tp.mean_value) else [])
    if len(tp.transform_op) and fixed:
        raise ConfigError(
            f"the Data layer '{layer.name}' in {where} sets both transform_op and transform_param fields ({', '.join(fixed)}); "
            "the two are mutually exclusive, express the whole preprocessing as transform_op steps."
        )
    if len(tp.transform_op):
        src = LmdbSource(source, pipeline=transform_ops_to_pipeline(tp.transform_op), workers=workers)
    elif not fixed:  # no preprocessing: int8kit records (stored preprocessed) or raw datums as stored
        src = LmdbSource(source, workers=workers)
    else:
        mean = None
        if tp.mean_file:
            mean_path = Path(tp.mean_file) if Path(tp.mean_file).is_absolute() else base / tp.mean_file
            mean = read_binaryproto(mean_path)
        src = LmdbSource(source, transform=CaffeTransform(tp, mean), workers=workers)
    src.description = f"Data layer '{layer.name}' of {where} (LMDB '{source}')"
    return src
