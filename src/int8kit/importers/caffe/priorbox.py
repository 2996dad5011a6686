"""SSD prior boxes, computed in numpy to a constant (they depend only on shapes and parameters)."""

from __future__ import annotations

import math

import numpy as np


def aspect_ratios(ratios, flip: bool) -> list[float]:
    """The distinct aspect ratios besides 1 (and their inverses when ``flip``), in order."""
    out: list[float] = []
    for ar in ratios:
        if abs(ar - 1.0) < 1e-6 or any(abs(ar - r) < 1e-6 for r in out):
            continue
        out.append(float(ar))
        if flip:
            out.append(1.0 / float(ar))
    return out


def box_sizes(p) -> list[tuple[float, float]]:
    """(width, height) of every prior at one location: per min size, the square, the max square, the ratios."""
    ratios = aspect_ratios(p.aspect_ratio, p.flip)
    sizes: list[tuple[float, float]] = []
    for i, min_size in enumerate(p.min_size):
        sizes.append((min_size, min_size))
        if i < len(p.max_size):
            s = math.sqrt(min_size * p.max_size[i])
            sizes.append((s, s))
        for ar in ratios:
            sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
    return sizes


def prior_boxes(p, layer_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """The PriorBox output (1 x 2 x H*W*num_priors*4): corner boxes, then their variances."""
    lh, lw = layer_hw
    img_h = p.img_h or p.img_size or image_hw[0]
    img_w = p.img_w or p.img_size or image_hw[1]
    step_h = p.step_h or p.step or img_h / lh
    step_w = p.step_w or p.step or img_w / lw
    sizes = np.asarray(box_sizes(p), dtype=np.float32)  # (K, 2): width, height
    cy, cx = np.meshgrid((np.arange(lh, dtype=np.float32) + p.offset) * np.float32(step_h),
                         (np.arange(lw, dtype=np.float32) + p.offset) * np.float32(step_w), indexing="ij")
    cx, cy = cx[..., None], cy[..., None]  # (H, W, 1)
    half_w, half_h = sizes[:, 0] / np.float32(2), sizes[:, 1] / np.float32(2)
    boxes = np.stack([(cx - half_w) / np.float32(img_w), (cy - half_h) / np.float32(img_h),
                      (cx + half_w) / np.float32(img_w), (cy + half_h) / np.float32(img_h)], axis=-1)
    boxes = boxes.astype(np.float32).reshape(-1)
    if p.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    variance = list(p.variance) or [0.1]
    if len(variance) == 1:
        variance = variance * 4
    if len(variance) != 4:
        raise ValueError(f"PriorBox needs 1 or 4 variance values, got {len(variance)}")
    var = np.tile(np.asarray(variance, dtype=np.float32), boxes.size // 4)
    return np.stack([boxes, var])[None].astype(np.float32)
