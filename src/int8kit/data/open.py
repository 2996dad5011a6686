"""``open_data``: turn what the user passed as ``--data`` into a sample source (or leave it as is).

    folder with data.mdb        -> LmdbSource (int8kit or Caffe Datum LMDB)
    *.prototxt                  -> the Caffe Data layer's LMDB with its transform_param / transform_op
    folder of images, *.txt     -> ImageSource (needs --preprocess or --preprocess-template)
    .npy/.npz, arrays, iterables -> unchanged (``batches_from`` validates them)

Image data needs an explicit preprocessing string: the model's size, normalisation and channel
order cannot be read from a photo, and a wrong guess only shows up later as a poor INT8 model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from int8kit.data.preprocess import Pipeline, resolve_preprocess
from int8kit.data.samples import UNNAMED
from int8kit.errors import ConfigError, DataError

_NEEDS_PREPROCESS = (
    "pass --preprocess, e.g. 'resize_h=224,resize_w=224;mean_value=103.94:116.78:123.68,scale=1.0' "
    "(Caffe, BGR) or add ';bgr2rgb' for TensorFlow/PyTorch models, or --preprocess-template NAME "
    "('int8kit data templates' lists them)"
)


def _lazy(module: str, name: str, what: str) -> Any:
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reading {what} needs {module}.{name}, which is not available in this install ({exc}).") from None


def _shape_hint(got: tuple[int, ...], want: tuple[int | None, ...]) -> str:
    if len(got) == 3 and len(want) == 3 and sorted(got) == sorted(d for d in want if d is not None):
        if got[0] in (1, 3) and want[2] == got[0]:
            return "the model takes channels last: add layout=NHWC to --preprocess"
        return "the model takes channels first: use layout=NCHW (the default) in --preprocess"
    if len(got) == 3 and len(want) == 3:
        for c_got, c_want, rest_equal in ((got[0], want[0], got[1:] == want[1:]), (got[2], want[2], got[:2] == want[:2])):
            if rest_equal and {c_got, c_want} == {1, 3}:
                return "the model takes one channel: add gray to --preprocess" if c_want == 1 else \
                    "the model takes three channels: drop gray from --preprocess"
    dims = [d for d in want if d is not None and d > 4]
    if len(dims) == 2:
        return f"add resize_h={dims[0]},resize_w={dims[1]} (or resize_side + crop_h/crop_w) to --preprocess"
    return "change --preprocess so its output has the model's input shape"


def check_first_image(source: Any, want: tuple[int | None, ...] | None, name: str) -> None:
    """Preprocess the first image once and compare with the model input's per-sample shape."""
    from int8kit.data.images import load_image

    if not want:
        return
    path = source.files[0]
    try:
        got = load_image(path, source.pipeline).shape
    except (OSError, ValueError) as exc:
        raise DataError(f"{source.description}: the first image '{path}' cannot be decoded ({exc}); remove or re-save it.") from None
    sample = want[1:]
    if len(got) != len(sample) or any(w is not None and w != g for w, g in zip(sample, got)):
        fmt = "(" + ", ".join("?" if d is None else str(d) for d in sample) + ")"
        raise DataError(
            f"preprocessing '{source.pipeline.text()}' turns '{path}' into shape {tuple(got)} but input '{name}' "
            f"expects {fmt} per sample; {_shape_hint(tuple(got), sample)}."
        )


def open_data(
    data: Any,
    *,
    preprocess: str | Pipeline | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    workers: int | None = None,
    input_shapes: list[tuple[int | None, ...] | None] | None = None,
    input_names: list[str] | None = None,
) -> Any:
    """A ``SampleSource`` for LMDB folders, Caffe Data-layer prototxts, image folders and image lists.

    Anything else (.npy/.npz paths, arrays, dicts, iterables) comes back unchanged. ``input_shapes``
    and ``input_names`` (the model's, or ``--input-shapes``/``--input-names``) let an image source
    name its input and check the preprocessing's output shape on the first image before a long pass.
    """
    pipeline = resolve_preprocess(preprocess, preprocess_template)
    if not isinstance(data, (str, os.PathLike)):
        if pipeline is not None:
            raise ConfigError("--preprocess applies to image folders, image lists and Caffe Datum LMDBs; the data given is already arrays, drop it.")
        return data
    path = Path(data)
    if path.is_dir() and (path / "data.mdb").is_file():
        lmdb_source = _lazy("int8kit.data.lmdb_source", "LmdbSource", f"LMDB '{path}'")
        return lmdb_source(path, pipeline=pipeline, workers=workers)
    suffix = path.suffix.lower()
    if suffix == ".prototxt":
        if pipeline is not None:
            raise ConfigError(f"the Data layer in '{path}' defines its own preprocessing (transform_param / transform_op); drop --preprocess.")
        caffe_data_source = _lazy("int8kit.data.caffe_data", "caffe_data_source", f"prototxt '{path}'")
        return caffe_data_source(path, workers=workers)
    if path.is_dir() or suffix == ".txt":
        if not path.exists():
            raise DataError(f"image data '{path}' does not exist; expected a folder of images or an image list .txt file.")
        if pipeline is None:
            kind = "image folder" if path.is_dir() else "image list"
            raise ConfigError(f"{kind} '{path}' needs preprocessing to become model input; {_NEEDS_PREPROCESS}.")
        from int8kit.data.images import ImageSource

        names = list(input_names or [])
        source = ImageSource(path, pipeline, strict=strict, workers=workers, input_name=names[0] if len(names) == 1 else UNNAMED)
        shapes = list(input_shapes or [])
        if len(shapes) == 1:
            check_first_image(source, shapes[0], names[0] if names else "input")
        return source
    if pipeline is not None:
        raise ConfigError(f"--preprocess applies to image folders, image lists and LMDBs; '{path}' is neither, drop --preprocess.")
    return data
