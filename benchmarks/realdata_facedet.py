"""The res10 SSD face detector's real-data recipe, shared by the benchmarks and
tests/e2e/test_caffe_facedet.py: photos (scikit-image's, Debian darknet's when installed, LFW face
mosaics), the detector's input blob, and the calibration crops (random crops and flips of photos
the test set does not use as they are)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np


def facedet_images() -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(test photos by name, calibration pool) as BGR arrays."""
    import cv2
    import skimage.data as skdata

    def bgr(img):
        img = np.dstack([img] * 3) if img.ndim == 2 else img[..., :3]
        return np.ascontiguousarray(img[:, :, ::-1])

    def mosaic(faces, start, n=3):
        tiles = [cv2.resize(faces[start + i], (100, 100)) for i in range(n * n)]
        return bgr(np.vstack([np.hstack(tiles[r * n:(r + 1) * n]) for r in range(n)]))

    photos = {n: bgr(getattr(skdata, n)()) for n in ("astronaut", "camera", "coffee", "chelsea", "rocket")}
    for path in sorted(glob.glob("/usr/share/darknet/data/*.jpg")):
        photos[Path(path).name] = cv2.imread(path)
    faces = (skdata.lfw_subset() * 255).astype(np.uint8)
    for i in range(4):
        photos[f"lfw_mosaic{i}"] = mosaic(faces, 9 * i)
    pool = list(photos.values())[:-4] + [mosaic(faces, 40 + 9 * j) for j in range(6)]
    return photos, pool


def facedet_blob(img: np.ndarray) -> np.ndarray:
    """The detector's input: 300 x 300, BGR means subtracted."""
    import cv2

    return cv2.dnn.blobFromImage(cv2.resize(img, (300, 300)), 1.0, (300, 300), (104, 177, 123))


def facedet_calib(n: int) -> np.ndarray:
    """``n`` random crops and flips of the calibration pool, as detector blobs (seeded: always the same)."""
    _, pool = facedet_images()
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        img = pool[k % len(pool)]
        h, w = img.shape[:2]
        s = rng.uniform(0.6, 1.0)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        out.append(facedet_blob(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return np.concatenate(out)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_matches(ref: np.ndarray, got: np.ndarray, conf: float = 0.5, iou: float = 0.5) -> list[tuple[float, float] | None]:
    """One image's detections (``DetectionOutput`` rows ``[_, label, confidence, x1, y1, x2, y2]``):
    for each reference face at ``confidence >= conf``, the IoU and |confidence difference| of the
    best-overlapping face of ``got`` (also at ``>= conf``), or ``None`` where none reaches ``iou``."""
    ref, got = ref[ref[:, 2] >= conf], got[got[:, 2] >= conf]
    out: list[tuple[float, float] | None] = []
    for det in ref:
        best = max(got, key=lambda g: box_iou(det[3:], g[3:]), default=None)
        overlap = box_iou(det[3:], best[3:]) if best is not None else 0.0
        out.append((overlap, abs(float(det[2]) - float(best[2]))) if overlap >= iou else None)
    return out
