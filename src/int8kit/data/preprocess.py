"""The preprocessing language of the manual (003): a string of image ops turned into a ``Pipeline``.

    resize_h=224,resize_w=224;mean_value=103.94:116.78:123.68,scale=1.0

Ops are separated by ``;``, parameters by ``,``, each written ``name=value``, several values by
``:``. An op is recognised by its parameters (``resize_h`` means resize), as in the manual; a
bare word (``bgr2rgb``, ``gray``) is a flag set to True.

Channel order: Pillow decodes images as RGB, but the language follows the manual and Caffe (whose
tools read images with OpenCV): the image *enters the pipeline as BGR*. ``mean_value``/``std``
are listed B:G:R and the output is BGR, which Caffe models expect, unless ``bgr2rgb`` appears
(TensorFlow and PyTorch models want RGB; the manual's TensorFlow templates end with it). After
``bgr2rgb`` any later per-channel values are listed R:G:B.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import numpy as np

from int8kit.data.preprocess_ops import (
    INTERPOLATIONS,
    Crop,
    Gray,
    Image,
    Layout,
    Letterbox,
    Op,
    Pad,
    Resize,
    Stand,
    Swap,
)
from int8kit.errors import ConfigError, DataError

# Value kinds: how one parameter's text becomes Python values.
_INT, _FLOAT, _FLOATS, _BOOL = "positive integer", "number", "numbers", "True/False"
_LAYOUTS = ("NCHW", "NHWC")

#: every op: its parameters and their kinds, the parameters that identify it, its class
_OPS: dict[str, tuple[dict[str, Any], set[str], Callable[[dict[str, list]], Op]]] = {
    "resize": ({"resize_h": _INT, "resize_w": _INT, "resize_side": _INT, "interpolation": tuple(INTERPOLATIONS)},
               {"resize_h", "resize_w", "resize_side"}, Resize),
    "crop": ({"crop_h": _INT, "crop_w": _INT, "crop_fraction": _FLOAT}, {"crop_h", "crop_w", "crop_fraction"}, Crop),
    "stand": ({"mean_value": _FLOATS, "std": _FLOATS, "scale": _FLOATS, "bgr2rgb": _BOOL},
              {"mean_value", "std", "scale"}, Stand),
    "bgr2rgb": ({"bgr2rgb": _BOOL}, {"bgr2rgb"}, Swap),
    "rgb2bgr": ({"rgb2bgr": _BOOL}, {"rgb2bgr"}, Swap),
    "gray": ({"gray": _BOOL}, {"gray"}, Gray),
    "letterbox": ({"letterbox_h": _INT, "letterbox_w": _INT, "pad_value": _FLOATS, "interpolation": tuple(INTERPOLATIONS)},
                  {"letterbox_h", "letterbox_w"}, Letterbox),
    "pad": ({"pad_h": _INT, "pad_w": _INT, "pad_value": _FLOATS}, {"pad_h", "pad_w"}, Pad),
    "layout": ({"layout": _LAYOUTS}, {"layout"}, Layout),
}
_FLAG_OPS = {"bgr2rgb", "rgb2bgr", "gray"}  # ops that are one boolean: "=False" drops them
_REQUIRED = {"letterbox": ("letterbox_h", "letterbox_w"), "pad": ("pad_h", "pad_w")}
_ALL_PARAMS = sorted({p for spec, _, _ in _OPS.values() for p in spec})

#: named preprocessing strings; the first three are the manual's templates, verbatim in meaning
TEMPLATES: dict[str, str] = {
    "vgg_tensorflow": "resize_side=256;crop_h=224,crop_w=224;mean_value=103.94:116.78:123.68,scale=1.0,bgr2rgb=True",
    "ssd_vgg_tensorflow": "resize_h=256,resize_w=256;mean_value=103.94:116.78:123.68,scale=1.0,bgr2rgb=True;crop_h=224,crop_w=224",
    "ssd_inception_tensorflow": (
        "resize_h=256,resize_w=256;scale=0.003921568859368563;crop_fraction=0.875;"
        "resize_h=224,resize_w=224;mean_value=0.5:0.5:0.5,scale=2.0,bgr2rgb=True"
    ),
    # int8kit additions: the common torchvision and Caffe ImageNet recipes
    "torchvision_imagenet": (
        "resize_side=256;crop_h=224,crop_w=224;bgr2rgb;scale=0.00392156862745098;"
        "mean_value=0.485:0.456:0.406,std=0.229:0.224:0.225"
    ),
    "caffe_imagenet": "resize_h=256,resize_w=256;crop_h=224,crop_w=224;mean_value=104.0:117.0:123.0,scale=1.0",
}


def _closest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'? " if match else ""


def _value(op: str, key: str, kind: Any, raw: list[Any]) -> list[Any]:
    """Convert one parameter's values (text or numbers) to its kind, with a message naming it."""
    where = f"{op} parameter {key}"
    if kind != _FLOATS and len(raw) != 1:
        raise ConfigError(f"{where} takes one value, got {len(raw)} ({':'.join(map(str, raw))}); remove the extra values.")
    out: list[Any] = []
    for item in raw:
        text = str(item).strip()
        if isinstance(kind, tuple):
            match = {c.lower(): c for c in kind}.get(text.lower())
            if match is None:
                raise ConfigError(f"{where} must be one of {list(kind)}, got '{text}'; {_closest(text, list(kind))}".rstrip("; "))
            out.append(match)
        elif kind == _BOOL:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{where} must be True or False, got '{text}'.")
            out.append(low in ("true", "1", "yes"))
        else:
            try:
                number = float(text)
            except ValueError:
                example = "224" if kind == _INT else "0.5" if kind == _FLOAT else "103.94:116.78:123.68"
                raise ConfigError(f"{where} takes {kind}, got '{text}'; write e.g. {key}={example}.") from None
            if not np.isfinite(number):
                raise ConfigError(f"{where} must be finite, got '{text}'.")
            if kind == _INT:
                if not number.is_integer() or number < 1:
                    raise ConfigError(f"{where} must be a positive integer, got '{text}'.")
                number = int(number)
            out.append(number)
    return out


def _build(op: str, params: dict[str, list[Any]], where: str) -> Op | None:
    """Validate ``params`` for ``op`` and build it (``None`` for a flag set to False)."""
    spec, _, cls = _OPS[op]
    for key in params:
        if key not in spec:
            raise ConfigError(
                f"{where}: '{key}' is not a parameter of {op}; {_closest(key, list(spec))}"
                f"{op} takes {sorted(spec)}."
            )
    converted = {key: _value(op, key, spec[key], list(vals)) for key, vals in params.items()}
    for key in _REQUIRED.get(op, ()):
        if key not in converted:
            raise ConfigError(f"{where}: {op} needs {' and '.join(_REQUIRED[op])}; add {key}=...")
    if op in _FLAG_OPS:
        if not converted.get(op, [True])[0]:
            return None
        converted = {}
    return cls(converted)


def _op_of(keys: list[str], segment: str) -> str:
    """Which op a segment's parameter names belong to."""
    for key in keys:
        if key not in _ALL_PARAMS:
            raise ConfigError(
                f"unknown preprocessing parameter '{key}' in '{segment}'; {_closest(key, _ALL_PARAMS)}"
                f"valid parameters: {', '.join(_ALL_PARAMS)}."
            )
    ops = [name for name, (_, defining, _) in _OPS.items() if defining & set(keys)]
    if "stand" in ops and "bgr2rgb" in ops:
        ops.remove("bgr2rgb")  # bgr2rgb=True inside a stand op, as the manual's templates write it
    if not ops:
        raise ConfigError(f"'{segment}' has no parameter that names an op; start it with e.g. resize_h=, crop_h= or mean_value=.")
    if len(ops) > 1:
        raise ConfigError(f"'{segment}' mixes parameters of {' and '.join(ops)}; separate the ops with ';'.")
    return ops[0]


class Pipeline:
    """A parsed preprocessing string: call it on one decoded image to get the model's input array.

    Input: an (H, W, C) or (H, W) array, uint8 or float, channels in RGB order as Pillow decodes.
    Output: float32, (C, H, W) by default or (H, W, C) after ``layout=NHWC``, channels in
    ``output_order``. The image enters the ops as BGR (see the module docstring).
    """

    input_order = "RGB"

    def __init__(self, ops: list[Op]):
        self.ops = list(ops)
        layouts = {op.layout for op in self.ops if isinstance(op, Layout)}
        if len(layouts) > 1:
            raise ConfigError(f"the preprocessing sets layout twice ({' and '.join(sorted(layouts))}); keep one layout=.")
        self.layout = layouts.pop() if layouts else "NCHW"

    @property
    def output_order(self) -> str:
        """Channel order of the output: "BGR", "RGB" or "GRAY"."""
        order = "BGR"
        for op in self.ops:
            if isinstance(op, Gray):
                return "GRAY"
            if isinstance(op, Swap) or (isinstance(op, Stand) and op.swap):
                order = "RGB" if order == "BGR" else "BGR"
        return order

    def text(self) -> str:
        """The pipeline in the preprocessing language (parses back to the same pipeline)."""
        return ";".join(op.text() for op in self.ops)

    def __repr__(self) -> str:
        return f"Pipeline('{self.text()}')"

    def describe(self) -> str:
        """One line for logs: the string, the channel order and the layout."""
        return f"{self.text() or '(no ops)'} -> {self.output_order} float32 {self.layout[1:]}"

    def output_shape(self, height: int, width: int, channels: int = 3) -> tuple[int, ...]:
        """Shape of the output for an input image of this size (a dry run on a blank image)."""
        return self(np.zeros((height, width, channels), dtype=np.uint8)).shape

    def fixed_output_shape(self, channels: int = 3) -> tuple[int, ...] | None:
        """The output shape when it does not depend on the image size (a resize to h x w, a crop),
        probed on two blank images of different sizes; ``None`` when it does."""
        a, b = self.output_shape(97, 131, channels), self.output_shape(211, 389, channels)
        return tuple(a) if a == b else None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._run(image, self.ops)

    def apply_pil(self, image: Any) -> np.ndarray:
        """The same as calling the pipeline on ``np.asarray(image)`` for a Pillow RGB or L image.

        Leading resizes run on the Pillow image itself (one array copy fewer per image, which is
        what decoding workers spend their time on); the result is identical.
        """
        ops = self.ops
        while ops and isinstance(ops[0], Resize) and image.mode in ("RGB", "L"):
            h, w = ops[0].size(image.height, image.width)
            if (h, w) != (image.height, image.width):
                image = image.resize((w, h), INTERPOLATIONS[ops[0].interpolation])
            ops = ops[1:]
        return self._run(np.asarray(image), ops)

    def _run(self, image: np.ndarray, ops: list[Op]) -> np.ndarray:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise DataError(f"preprocessing expects an (H, W, 3) RGB or (H, W, 1) gray image, got shape {arr.shape}; convert it to RGB first.")
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float32, copy=False)
        img = Image(arr, "BGR")
        for op in ops:
            img = op(img)
        out = img.pixels.astype(np.float32, copy=False)
        if img.channels == 3 and img.order == "BGR":
            out = out[..., ::-1]  # memory holds RGB; the pipeline's meaning is BGR
        if self.layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out)


def pipeline_from_ops(ops: list[tuple[str, dict[str, list]]]) -> Pipeline:
    """Build a ``Pipeline`` from ``[(op_name, {param: [values]}), ...]`` (values may be numbers or text)."""
    built: list[Op] = []
    for index, entry in enumerate(ops):
        try:
            name, params = entry
        except (TypeError, ValueError):
            raise ConfigError(f"preprocessing op {index} is {entry!r}; expected a (name, {{param: [values]}}) pair.") from None
        if name not in _OPS:
            raise ConfigError(f"unknown preprocessing op '{name}'; {_closest(str(name), list(_OPS))}valid ops: {', '.join(_OPS)}.")
        fixed = {k: v if isinstance(v, (list, tuple)) else [v] for k, v in dict(params).items()}
        if name in _FLAG_OPS and not fixed:
            fixed = {name: [True]}
        op = _build(name, fixed, f"op {index} ({name})")
        if op is not None:
            built.append(op)
    return Pipeline(built)


def parse_preprocess(text: str) -> Pipeline:
    """Parse the manual's preprocessing string (``op;op``, ``name=value,name=value``, ``v1:v2:v3``)."""
    if not isinstance(text, str):
        raise ConfigError(f"the preprocessing string must be text, got {type(text).__name__}.")
    if text.strip() in TEMPLATES:
        text = TEMPLATES[text.strip()]
    ops: list[tuple[str, dict[str, list]]] = []
    for segment in (s.strip() for s in text.split(";")):
        if not segment:
            continue
        params: dict[str, list] = {}
        for part in (p.strip() for p in segment.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep:
                value = "True"  # a bare word is a flag: "bgr2rgb", "gray"
            elif not value.strip():
                raise ConfigError(f"parameter '{key}' in '{segment}' has no value; write {key}=VALUE.")
            if key in params:
                raise ConfigError(f"parameter '{key}' appears twice in '{segment}'; give it once (several values go after ':').")
            params[key] = [v.strip() for v in value.split(":")]
        ops.append((_op_of(list(params), segment), params))
    if not ops:
        raise ConfigError("the preprocessing string is empty; give ops like 'resize_h=224,resize_w=224;mean_value=127,scale=0.0078125'.")
    return pipeline_from_ops(ops)


def resolve_preprocess(preprocess: str | Pipeline | None = None, template: str | None = None) -> Pipeline | None:
    """The pipeline from ``--preprocess`` (a string or Pipeline) or ``--preprocess-template`` (a name); ``None`` if neither."""
    if preprocess is not None and template is not None:
        raise ConfigError("give --preprocess or --preprocess-template, not both; a template is a named preprocessing string.")
    if template is not None:
        if template not in TEMPLATES:
            raise ConfigError(
                f"unknown preprocessing template '{template}'; {_closest(template, list(TEMPLATES))}"
                f"templates: {', '.join(TEMPLATES)} ('int8kit data templates' prints them)."
            )
        return parse_preprocess(TEMPLATES[template])
    if preprocess is None or isinstance(preprocess, Pipeline):
        return preprocess
    return parse_preprocess(preprocess)
