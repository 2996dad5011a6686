"""PP-OCRv4 text recogniser (rapidocr-onnxruntime 1.4.4) and rendered English text lines.

The model comes from ``$INT8KIT_RAPIDOCR_MODELS`` (the wheel's ``models`` folder) or from an
installed ``rapidocr_onnxruntime`` package. Text lines are drawn with Pillow in DejaVu fonts of
varied face, size, ink and background, with slight blur and noise, and cut out like a detector's
crop (a few pixels of margin around the text).

Preprocessing mirrors ``TextRecognizer.resize_norm_img`` of rapidocr: crops are BGR (rapidocr
reads pages with cv2), height 48, width ``ceil(48 * w / h)`` capped at 320, cv2 bilinear resize,
``(x / 255 - 0.5) / 0.5``, CHW, right-padded with zeros to width 320 (the width rapidocr uses when
no crop of the batch is wider than 320/48). Lines are chosen to fit that width.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case, cache_dir, cached_splits
from benchmarks.realdata_orientation import _FONTS, _font
from benchmarks.realdata_text import english_sentences

REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
REC_HEIGHT, REC_WIDTH = 48, 320


def rapidocr_models_dir() -> Path:
    """The folder holding rapidocr's ONNX models (env var first, then the installed package)."""
    env = os.environ.get("INT8KIT_RAPIDOCR_MODELS")
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        unpacked = cache_dir() / "rapidocr144"  # where the e2e tests look too (tests/e2e/test_optimize_real.py)
        if unpacked.is_dir():
            return unpacked
        raise ImportError("rapidocr_onnxruntime is not installed and INT8KIT_RAPIDOCR_MODELS is unset")
    return Path(spec.origin).parent / "models"


def rapidocr_model(name: str) -> Path:
    """Path of one ONNX file of rapidocr's models folder."""
    path = rapidocr_models_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (rapidocr-onnxruntime 1.4.4 ships it)")
    return path


def rec_onnx() -> Path:
    """Path of the PP-OCRv4 recogniser ONNX file."""
    return rapidocr_model(REC_MODEL)


def rec_preprocess(bgr: np.ndarray) -> np.ndarray:
    """One BGR uint8 crop -> (3, 48, 320) float32 exactly as rapidocr's recogniser prepares it."""
    import cv2

    h, w = bgr.shape[:2]
    resized_w = min(REC_WIDTH, int(math.ceil(REC_HEIGHT * w / float(h))))
    img = cv2.resize(bgr, (resized_w, REC_HEIGHT)).astype(np.float32)
    img = img.transpose(2, 0, 1) / 255
    img -= 0.5
    img /= 0.5
    out = np.zeros((3, REC_HEIGHT, REC_WIDTH), dtype=np.float32)
    out[:, :, :resized_w] = img
    return out


def _colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Background and ink: mostly dark on light, sometimes light on dark or tinted."""
    kind = rng.random()
    if kind < 0.15:  # light text on a dark sign or banner
        return tuple(int(v) for v in rng.integers(0, 90, 3)), tuple(int(v) for v in rng.integers(190, 256, 3))
    if kind < 0.35:  # tinted paper or screen
        bg = rng.integers(140, 256, 3)
        return tuple(int(v) for v in bg), tuple(int(v) for v in rng.integers(0, 80, 3))
    gray = int(rng.integers(200, 256))
    ink = int(rng.integers(0, 90))
    return (gray, gray, gray), (ink, ink, ink)


def _render_line(rng: np.random.Generator, words: list[str], texts: list[str] | None = None) -> np.ndarray:
    """One text line as a detector crop (RGB uint8), at most 320/48 wide after resizing; its text
    is appended to ``texts`` when given."""
    from PIL import Image, ImageDraw, ImageFilter

    size = int(rng.integers(16, 44))
    font = _font(_FONTS[rng.integers(len(_FONTS))], size)
    bg, ink = _colors(rng)
    pad_x, pad_y = int(rng.integers(2, 10)), int(rng.integers(2, 8))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = words[0]
    for word in words[1:]:  # longest prefix that fits rapidocr's 320 x 48 input
        x0, y0, x1, y1 = probe.textbbox((0, 0), f"{text} {word}", font=font)
        if (x1 - x0 + 2 * pad_x) / (y1 - y0 + 2 * pad_y) > REC_WIDTH / REC_HEIGHT:
            break
        text = f"{text} {word}"
    if texts is not None:
        texts.append(text)
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    w, h = x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y
    img = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, fill=ink, font=font)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.9))))
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, rng.uniform(0.0, 8.0), size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def render_text_lines(n: int, seed: int, texts: list[str] | None = None) -> list[np.ndarray]:
    """``n`` rendered English text lines (RGB uint8 crops of varied size), deterministic; each
    line's text is appended to ``texts`` when given (the ground truth)."""
    rng = np.random.default_rng(seed)
    sentences = english_sentences(n + 50, seed + 2000)
    lines = []
    for i in range(n):
        words = sentences[i].split()
        start = int(rng.integers(0, max(1, len(words) - 1)))
        count = int(rng.integers(1, 9))
        lines.append(_render_line(rng, words[start:start + count] or words[:1], texts))
    return lines


def ocr_rec_case(n_calib: int = 128, n_test: int = 200, calib_seed: int = 0) -> Case:
    """PP-OCRv4 recogniser with rendered calibration (seed ``calib_seed``, 0 by default) and test
    (seed 1) lines."""
    if calib_seed == 1:
        raise ValueError("calib_seed 1 renders the test lines; choose another seed")
    model = rec_onnx()
    # rapidocr's crops are BGR (cv2.imread); Pillow renders RGB.
    paths = cached_splits("ocr_rec", [("calib", n_calib, calib_seed), ("test", n_test, 1)], lambda n, seed: {
        "x": np.stack([rec_preprocess(np.ascontiguousarray(im[..., ::-1])) for im in render_text_lines(n, seed)])})
    return Case("ocr_rec", model, paths["calib"], paths["test"], None, "ctc")
