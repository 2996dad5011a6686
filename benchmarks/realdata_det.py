"""PP-OCRv4 text detector (rapidocr-onnxruntime 1.4.4) on rendered text pages, and its metrics.

Pages are the rendered paragraphs of ``realdata_orientation`` (varied fonts, sizes, ink, blur,
noise), upright. Preprocessing follows rapidocr's ``DetPreProcess`` (BGR, ``(x / 255 - 0.5) / 0.5``,
CHW) except the size: rapidocr scales the short side to 736 and rounds both sides to multiples
of 32, which gives every page its own shape; here every page is resized to 640x640 so pages batch.

The detector outputs a text probability map. ``det_metrics`` compares INT8 with FP32 the way the
map is used: rapidocr's ``DBPostProcess`` thresholds it at 0.3 and dilates the bitmap with a 2x2
kernel; each connected region is one text box candidate. A region counts as found when the other
model's best-overlapping region covers it with IoU > 0.5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case, cached_splits
from benchmarks.realdata_ocr import rapidocr_model
from benchmarks.realdata_orientation import _render_page
from benchmarks.realdata_text import english_sentences

DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
DET_SIDE = 640
# rapidocr's DBPostProcess: probability threshold, dilation kernel; regions smaller than this
# many pixels are specks its min_size check drops.
DB_THRESHOLD = 0.3
MIN_REGION_PIXELS = 9


def det_onnx() -> Path:
    """Path of the PP-OCRv4 detector ONNX file."""
    return rapidocr_model(DET_MODEL)


def det_preprocess(bgr: np.ndarray) -> np.ndarray:
    """One BGR uint8 page -> (3, 640, 640) float32, normalised as rapidocr's detector expects."""
    import cv2

    img = cv2.resize(bgr, (DET_SIDE, DET_SIDE)).astype(np.float32)
    img = (img / 255 - 0.5) / 0.5
    return img.transpose(2, 0, 1).astype(np.float32)


def render_pages(n: int, seed: int) -> list[np.ndarray]:
    """``n`` upright rendered text pages (RGB uint8), deterministic."""
    rng = np.random.default_rng(seed)
    sentences = english_sentences(60 * n + 100, seed + 3000)
    pages = []
    for _ in range(n):
        start = int(rng.integers(0, len(sentences) - 60))
        pages.append(_render_page(rng, sentences[start:start + 60]))
    return pages


def ocr_det_case(n_calib: int = 32, n_test: int = 24) -> Case:
    """PP-OCRv4 detector with rendered calibration (seed 0) and test (seed 1) pages."""
    model = det_onnx()
    # rapidocr reads pages with cv2 (BGR); Pillow renders RGB.
    paths = cached_splits("ocr_det", [("calib", n_calib, 0), ("test", n_test, 1)], lambda n, seed: {
        "x": np.stack([det_preprocess(np.ascontiguousarray(p[..., ::-1])) for p in render_pages(n, seed)])})
    return Case("ocr_det", model, paths["calib"], paths["test"], None, "text map")


def text_regions(prob: np.ndarray) -> np.ndarray:
    """Label image of the text regions of one (H, W) probability map, as rapidocr binarises it
    (threshold, 2x2 dilation); specks below ``MIN_REGION_PIXELS`` get label 0."""
    import cv2

    bitmap = cv2.dilate((prob > DB_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    count, labels = cv2.connectedComponents(bitmap, connectivity=8)
    sizes = np.bincount(labels.ravel(), minlength=count)
    labels[sizes[labels] < MIN_REGION_PIXELS] = 0
    return labels


def _found(ref: np.ndarray, got: np.ndarray) -> tuple[int, int]:
    """(regions of ``ref``, those that a region of ``got`` covers with IoU > 0.5)."""
    keep = ref > 0
    ids_ref = np.unique(ref[keep])
    if ids_ref.size == 0:
        return 0, 0
    area_ref = np.bincount(ref.ravel())
    area_got = np.bincount(got.ravel())
    both = keep & (got > 0)
    pairs, overlap = np.unique(np.stack([ref[both], got[both]]), axis=1, return_counts=True)
    iou = overlap / (area_ref[pairs[0]] + area_got[pairs[1]] - overlap)
    best = np.zeros(area_ref.size)
    np.maximum.at(best, pairs[0], iou)
    return int(ids_ref.size), int(np.count_nonzero(best[ids_ref] > 0.5))


def det_metrics(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Text-region recall and precision of INT8 against FP32, bitmap IoU and map cosine.

    ``fp32``/``int8``: (N, 1, H, W) probability maps. Recall: share of FP32 regions an INT8 region
    matches (IoU > 0.5); precision: share of INT8 regions an FP32 region matches.
    """
    regions = found = regions_int8 = found_int8 = 0
    inter = union = 0
    for a, b in zip(fp32[:, 0], int8[:, 0]):
        la, lb = text_regions(a), text_regions(b)
        n, k = _found(la, lb)
        regions, found = regions + n, found + k
        n, k = _found(lb, la)
        regions_int8, found_int8 = regions_int8 + n, found_int8 + k
        ba, bb = a > DB_THRESHOLD, b > DB_THRESHOLD
        inter, union = inter + int(np.count_nonzero(ba & bb)), union + int(np.count_nonzero(ba | bb))
    x, y = fp32.reshape(len(fp32), -1).astype(np.float64), int8.reshape(len(int8), -1).astype(np.float64)
    cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
    return {
        "regions": float(regions),
        "region recall": found / max(regions, 1),
        "region precision": found_int8 / max(regions_int8, 1),
        "bitmap IoU": inter / max(union, 1),
        "map cosine": float(cos.mean()),
    }
