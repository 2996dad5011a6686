"""Detection mAP@0.5, VOC style (``--metric map``; the definition is in docs/metrics.md).

Labels are one list of ``(cls, x1, y1, x2, y2)`` boxes per image (an LMDB's ``data.label``
detection lines ``cls,x1,y1,x2,y2;...``). Detections come from SSD ``DetectionOutput`` rows
``(image, label, conf, x1, y1, x2, y2)`` as the model returns them, or from a ``--postprocess
module:function`` that turns one batch's outputs into one ``(K, 6)`` array per image, rows
``(cls, conf, x1, y1, x2, y2)`` (or into DetectionOutput rows).

Each image's detections are matched to its boxes once (highest confidence first, to the
unmatched box of the same class with the highest IoU >= 0.5); the AP of a class is then a
function of per-image weights, so a bootstrap resample of images costs one weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from int8kit.errors import ConfigError, DataError
from int8kit.evaluate.plugins import load_object

IOU_THRESHOLD = 0.5
SSD_COLUMNS = 7  # image, label, conf, x1, y1, x2, y2


def load_postprocess(ref: str) -> Callable[[dict[str, np.ndarray]], Any]:
    """The user's ``module:function`` turning a batch's outputs into detections."""
    fn = load_object(ref, what="post-processing function", flag="--postprocess")
    if not callable(fn):
        raise ConfigError(f"--postprocess '{ref}' names a {type(fn).__name__}, not a function; expected "
                          "function(outputs) -> one (K, 6) array per image.")
    return fn


def ssd_rows(rows: np.ndarray, images: int) -> list[np.ndarray]:
    """DetectionOutput rows ``(..., 7)`` as one ``(K, 6)`` array per image (image id -1: padding)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, SSD_COLUMNS)
    image = rows[:, 0]
    return [rows[image == i, 1:] for i in range(images)]


def as_detections(found: Any, images: int, where: str) -> list[np.ndarray]:
    """What a post-processing hook (or the model) returned, checked: one (K, 6) array per image."""
    if isinstance(found, np.ndarray) and found.ndim >= 2 and found.shape[-1] == SSD_COLUMNS:
        return ssd_rows(found, images)
    if not isinstance(found, Sequence) or isinstance(found, str) or len(found) != images:
        got = f"{len(found)} entries" if isinstance(found, Sequence) else type(found).__name__
        raise DataError(f"{where} gave {got} for a batch of {images} images; expected one (K, 6) array per image "
                        "(cls, conf, x1, y1, x2, y2) or DetectionOutput rows (..., 7).")
    out = []
    for i, det in enumerate(found):
        arr = np.asarray(det, dtype=np.float64)
        if arr.size == 0:
            arr = arr.reshape(0, 6)
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise DataError(f"{where} gave detections of shape {arr.shape} for image {i} of the batch; expected (K, 6) "
                            "rows cls, conf, x1, y1, x2, y2.")
        out.append(arr)
    return out


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x1, y1, x2, y2) box with each of ``boxes`` (continuous
    coordinates: no +1 pixel)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(det: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """True positives of one image's detections (rows cls, conf, box) against its boxes (rows cls,
    box): highest confidence first, each box matched at most once (VOC)."""
    tp = np.zeros(len(det), dtype=bool)
    taken = np.zeros(len(truth), dtype=bool)
    for i in np.argsort(-det[:, 1], kind="stable"):
        same = np.flatnonzero(truth[:, 0] == det[i, 0])
        if not same.size:
            continue
        overlaps = iou(det[i, 2:], truth[same, 1:])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= IOU_THRESHOLD and not taken[same[best]]:
            tp[i] = taken[same[best]] = True
    return tp


def average_precision(conf: np.ndarray, tp: np.ndarray, weight: np.ndarray, positives: float) -> float:
    """All-point interpolated AP (VOC 2010 on) of weighted detections of one class."""
    order = np.argsort(-conf, kind="stable")
    return ranked_ap(tp[order], weight[order], positives)


def ranked_ap(hit: np.ndarray, w: np.ndarray, positives: float) -> float:
    """``average_precision`` of detections already ranked by confidence (highest first)."""
    ctp, cfp = np.cumsum(w * hit), np.cumsum(w * ~hit)
    recall = ctp / positives
    seen = ctp + cfp
    precision = np.where(seen > 0, ctp / np.where(seen > 0, seen, 1), 0.0)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(steps * best_after))


class MeanAP:
    """VOC mAP@0.5 over the classes that have ground-truth boxes; ``score_of`` resamples images."""

    labels_from = "labels"

    def __init__(self, output: str | None = None, postprocess: Callable[[dict[str, np.ndarray]], Any] | None = None) -> None:
        self.output, self.postprocess = output, postprocess
        self.images = 0
        self._det: list[np.ndarray] = []  # per detection: image, cls, conf, tp
        self._truth: list[np.ndarray] = []  # per box: image, cls
        self._det_max, self._truth_max = 0.0, 0.0  # largest coordinates seen: normalised vs pixels
        # per class with boxes: its detections' images and hits ranked by confidence, its boxes' images;
        # ranked once, so each bootstrap resample costs only weighted sums
        self._ranked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        images = len(labels)
        if self.postprocess is not None:
            dets = as_detections(self.postprocess(outputs), images, "--postprocess")
        else:
            raw = outputs[self.output] if self.output is not None else next(iter(outputs.values()))
            if np.shape(raw)[-1:] != (SSD_COLUMNS,):
                raise DataError(f"--metric map got an output of shape {np.shape(raw)}; expected SSD DetectionOutput rows "
                                "(..., 7); pass --postprocess module:function to turn the outputs into boxes.")
            dets = ssd_rows(raw, images)
        for det, boxes in zip(dets, labels):
            truth = np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 5)
            tp = match(det, truth)
            self._det.append(np.column_stack([np.full(len(det), self.images), det[:, 0], det[:, 1], tp]))
            self._truth.append(np.column_stack([np.full(len(truth), self.images), truth[:, 0]]))
            if det.size:
                self._det_max = max(self._det_max, float(np.abs(det[:, 2:]).max()))
            if truth.size:
                self._truth_max = max(self._truth_max, float(np.abs(truth[:, 1:]).max()))
            self.images += 1
        self._ranked = None

    def _classes(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._ranked is not None:
            return self._ranked
        det = np.concatenate(self._det) if self._det else np.zeros((0, 4))
        truth = np.concatenate(self._truth) if self._truth else np.zeros((0, 2))
        if not len(truth):
            raise DataError("--metric map found no ground-truth boxes in the labels; expected data.label lines "
                            "cls,x1,y1,x2,y2;... for the test images; check the labels.")
        if self._det_max and self._det_max <= 1.5 < self._truth_max:
            raise DataError(f"--metric map: the detections' boxes are normalised (at most {self._det_max:.2f}) but the "
                            f"labels' are in pixels (up to {self._truth_max:.0f}); expected one scale; write the labels "
                            "as fractions of the image size or return pixel boxes from --postprocess.")
        self._ranked = []
        for c in np.unique(truth[:, 1]):  # detections of classes without boxes have no AP to count in
            mine = det[det[:, 1] == c]
            order = np.argsort(-mine[:, 2], kind="stable")
            self._ranked.append((mine[order, 0].astype(np.int64), mine[order, 3].astype(bool),
                                 truth[truth[:, 1] == c, 0].astype(np.int64)))
        return self._ranked

    def score_of(self, images: np.ndarray) -> float:
        """mAP of a resample of the images seen (indices; repeats count as often as they appear)."""
        return self._map(np.bincount(np.asarray(images, dtype=np.int64), minlength=self.images).astype(np.float64))

    def score(self) -> float:
        return self._map(np.ones(self.images))

    def _map(self, weight: np.ndarray) -> float:
        aps = []
        for img, hit, boxes in self._classes():
            positives = float(weight[boxes].sum())
            if positives > 0:  # a class no resampled image holds has no AP
                aps.append(ranked_ap(hit, weight[img], positives))
        return float(np.mean(aps)) if aps else math.nan
