"""The image operations of the preprocessing language, each a small callable on an ``Image`` state.

An op sees the picture as an ``(H, W, C)`` array plus the channel order it currently *means*
("BGR" or "RGB"). Pixels stay in the order Pillow decoded them (RGB) until the pipeline ends, so
a channel swap costs nothing: per-channel values (``mean_value``, ``std``, ``pad_value``) are
reversed instead when the meaning and the memory order differ, and one flip happens at the end.
Resizing goes through Pillow (uint8 images in one call, float images one ``F`` plane per
channel), so results are Pillow's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from int8kit.errors import ConfigError, DataError

#: resampling filters a resize or letterbox may name (Pillow's; ``area`` is Pillow's ``box``)
INTERPOLATIONS = {
    "nearest": PILImage.Resampling.NEAREST,
    "bilinear": PILImage.Resampling.BILINEAR,
    "bicubic": PILImage.Resampling.BICUBIC,
    "lanczos": PILImage.Resampling.LANCZOS,
    "box": PILImage.Resampling.BOX,
    "area": PILImage.Resampling.BOX,
    "hamming": PILImage.Resampling.HAMMING,
}


@dataclass
class Image:
    """The picture between ops: pixels in RGB memory order and the order they stand for."""

    pixels: np.ndarray  # (H, W, C), uint8 or float32
    order: str  # "BGR" or "RGB": what the channels mean now

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]

    def per_channel(self, values: list[float], what: str) -> np.ndarray:
        """``values`` (listed in the current channel order) as a vector in memory order."""
        vec = np.asarray(values, dtype=np.float32)
        if vec.size == 1:
            return vec
        if vec.size != self.channels:
            raise DataError(
                f"{what} has {vec.size} values but the image has {self.channels} channel(s); "
                f"give one value or {self.channels}."
            )
        return vec[::-1].copy() if self.channels == 3 and self.order == "BGR" else vec


def _as_float(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype == np.float32 else pixels.astype(np.float32)


def resize_pixels(pixels: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Pillow's resize of an (H, W, C) array: uint8 RGB/L in one call, anything else per float plane."""
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    method = INTERPOLATIONS[interpolation]
    if pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3):
        img = PILImage.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        out = np.asarray(img.resize((width, height), method))
        return out[..., None] if out.ndim == 2 else out
    planes = [
        np.asarray(PILImage.fromarray(np.ascontiguousarray(_as_float(pixels[..., c]))).resize((width, height), method))
        for c in range(pixels.shape[2])
    ]
    return np.stack(planes, axis=2)


class Op:
    """Base of every op: ``name`` and the parameters it was built from (for ``text()``)."""

    name = ""

    def __init__(self, params: dict[str, list]):
        self.params = params

    def __call__(self, image: Image) -> Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def text(self) -> str:
        """The op in the preprocessing language (round-trips through the parser)."""
        if not self.params:
            return self.name
        return ",".join(f"{k}={':'.join(_fmt(v) for v in vals)}" for k, vals in self.params.items())


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


class Resize(Op):
    """``resize_h`` x ``resize_w``, or ``resize_side``: the shorter side to N, keeping the aspect ratio."""

    name = "resize"

    def __init__(self, params: dict[str, list]):
        super().__init__(params)
        self.side = params.get("resize_side", [None])[0]
        self.h = params.get("resize_h", [None])[0]
        self.w = params.get("resize_w", [None])[0]
        self.interpolation = params.get("interpolation", ["bilinear"])[0]
        if self.side is not None and (self.h is not None or self.w is not None):
            raise ConfigError("resize takes resize_side or resize_h/resize_w, got both; keep one of them.")
        if self.side is None and (self.h is None or self.w is None):
            raise ConfigError("resize needs both resize_h and resize_w (or resize_side alone); add the missing one.")

    def size(self, h: int, w: int) -> tuple[int, int]:
        """Output (height, width) for an (h, w) input."""
        if self.side is None:
            return self.h, self.w
        scale = self.side / min(h, w)
        # round half up, so a 375x500 photo with side 256 becomes 256x341 (TF's vgg rule)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def __call__(self, image: Image) -> Image:
        h, w = self.size(*image.pixels.shape[:2])
        return Image(resize_pixels(image.pixels, h, w, self.interpolation), image.order)


class Crop(Op):
    """Centre crop to ``crop_h`` x ``crop_w``, or keep the central ``crop_fraction`` of each side."""

    name = "crop"

    def __init__(self, params: dict[str, list]):
        super().__init__(params)
        self.fraction = params.get("crop_fraction", [None])[0]
        self.h = params.get("crop_h", [None])[0]
        self.w = params.get("crop_w", [None])[0]
        if self.fraction is not None and (self.h is not None or self.w is not None):
            raise ConfigError("crop takes crop_fraction or crop_h/crop_w, got both; keep one of them.")
        if self.fraction is None and (self.h is None or self.w is None):
            raise ConfigError("crop needs both crop_h and crop_w (or crop_fraction alone); add the missing one.")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {self.fraction}; e.g. crop_fraction=0.875.")

    def box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in an (h, w) image."""
        if self.fraction is not None:
            # TensorFlow's central_crop: the same margin on both sides, rounded down
            top, left = int((h - h * self.fraction) / 2), int((w - w * self.fraction) / 2)
            return top, left, h - 2 * top, w - 2 * left
        if self.h > h or self.w > w:
            raise DataError(
                f"crop {self.h}x{self.w} is larger than the {h}x{w} image at that step; "
                "resize first (e.g. resize_side) or crop less."
            )
        return (h - self.h) // 2, (w - self.w) // 2, self.h, self.w

    def __call__(self, image: Image) -> Image:
        top, left, ch, cw = self.box(*image.pixels.shape[:2])
        return Image(image.pixels[top : top + ch, left : left + cw], image.order)


class Stand(Op):
    """``(x - mean_value) / std * scale`` per channel, then an optional ``bgr2rgb`` swap."""

    name = "stand"

    def __init__(self, params: dict[str, list]):
        super().__init__(params)
        self.mean = params.get("mean_value", [0.0])
        self.std = params.get("std", [1.0])
        self.scale = params.get("scale", [1.0])
        self.swap = params.get("bgr2rgb", [False])[0]
        if any(s == 0 for s in self.std):
            raise ConfigError(f"std must not be 0, got {':'.join(map(str, self.std))}; give the per-channel standard deviations.")

    def __call__(self, image: Image) -> Image:
        mean = image.per_channel(self.mean, "mean_value")
        gain = image.per_channel(self.scale, "scale") / image.per_channel(self.std, "std")
        pixels = image.pixels.astype(np.float32)  # a fresh array: the in-place steps below touch nothing else
        pixels -= mean
        pixels *= gain
        out = Image(pixels, image.order)
        return Swap({})(out) if self.swap else out


class Swap(Op):
    """``bgr2rgb`` (or ``rgb2bgr``): exchange the first and third channel."""

    name = "bgr2rgb"

    def __call__(self, image: Image) -> Image:
        if image.channels != 3:
            raise DataError(f"bgr2rgb needs a 3-channel image, got {image.channels} channel(s); drop bgr2rgb for gray models.")
        return Image(image.pixels, "RGB" if image.order == "BGR" else "BGR")


class Gray(Op):
    """One luminance channel, ITU-R 601: 0.299 R + 0.587 G + 0.114 B (Pillow's ``convert('L')``)."""

    name = "gray"

    def __call__(self, image: Image) -> Image:
        px = image.pixels
        if image.channels == 1:
            return image
        if px.dtype == np.uint8:
            return Image(np.asarray(PILImage.fromarray(px).convert("L"))[..., None], image.order)
        lum = px[..., 0] * 0.299 + px[..., 1] * 0.587 + px[..., 2] * 0.114
        return Image(lum[..., None].astype(np.float32), image.order)


class Pad(Op):
    """Pad bottom and right to ``pad_h`` x ``pad_w`` with ``pad_value`` (image stays top-left)."""

    name = "pad"

    def __init__(self, params: dict[str, list]):
        super().__init__(params)
        self.h, self.w = params["pad_h"][0], params["pad_w"][0]
        self.value = params.get("pad_value", [0.0])

    def place(self, image: Image, top: int, left: int) -> Image:
        h, w, c = image.pixels.shape
        if h + top > self.h or w + left > self.w:
            raise DataError(f"{self.name} to {self.h}x{self.w} got a larger {h}x{w} image; resize it first or pad to a larger size.")
        value = image.per_channel(self.value, "pad_value")
        dtype = image.pixels.dtype
        if dtype == np.uint8 and not (np.all(value == np.round(value)) and np.all((value >= 0) & (value <= 255))):
            dtype = np.float32  # a pad value like 127.5 needs float pixels
        canvas = np.empty((self.h, self.w, c), dtype=dtype)
        canvas[...] = value
        canvas[top : top + h, left : left + w] = image.pixels
        return Image(canvas, image.order)

    def __call__(self, image: Image) -> Image:
        return self.place(image, 0, 0)


class Letterbox(Pad):
    """Resize to fit ``letterbox_h`` x ``letterbox_w`` keeping the aspect ratio, centred, padded with ``pad_value``."""

    name = "letterbox"

    def __init__(self, params: dict[str, list]):
        Op.__init__(self, params)
        self.h, self.w = params["letterbox_h"][0], params["letterbox_w"][0]
        self.value = params.get("pad_value", [0.0])
        self.interpolation = params.get("interpolation", ["bilinear"])[0]

    def __call__(self, image: Image) -> Image:
        h, w = image.pixels.shape[:2]
        scale = min(self.h / h, self.w / w)
        nh, nw = min(self.h, max(1, int(h * scale + 0.5))), min(self.w, max(1, int(w * scale + 0.5)))
        resized = Image(resize_pixels(image.pixels, nh, nw, self.interpolation), image.order)
        return self.place(resized, (self.h - nh) // 2, (self.w - nw) // 2)


class Layout(Op):
    """Output layout: ``NCHW`` (channels first, the default) or ``NHWC``; applied when the pipeline ends."""

    name = "layout"

    def __init__(self, params: dict[str, list]):
        super().__init__(params)
        self.layout = params["layout"][0]

    def __call__(self, image: Image) -> Image:
        return image
