"""``int8kit lmdb create``: decode and preprocess images into an int8kit LMDB, keeping the originals.

The images are found, checked and labelled exactly as ``ImageSource`` does (folder or list file,
class labels from sub-folders or ``path label`` lines) and go through the same decoder and
``Pipeline``, so an LMDB made here feeds the model the very arrays the image folder would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from int8kit.data.lmdb_source import parallel_map
from int8kit.data.lmdb_store import LmdbWriter
from int8kit.errors import ConfigError, DataError
from int8kit.graph.io import resolve_path


@dataclass(frozen=True)
class CreateResult:
    """Where the LMDB went and what it holds."""

    path: Path
    samples: int
    records: int
    skipped: int


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def create_from_images(
    images: str | os.PathLike,
    output: str | os.PathLike,
    *,
    preprocess: str | None = None,
    template: str | None = None,
    shape: tuple[int, ...],
    originals: bool = True,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> CreateResult:
    """Write every image of ``images`` (folder or list) preprocessed to ``output``, ``shape[0]`` per record.

    Each sample must have shape ``shape[1:]``; labels (class sub-folders or list labels) go to
    ``data.label``; ``originals`` saves each decoded image as JPEG in ``original_images/``.
    """
    from tqdm import tqdm

    from int8kit.data.images import ImageSource, decode_rgb, default_workers
    from int8kit.data.preprocess import resolve_preprocess

    pipeline = resolve_preprocess(preprocess, template)
    if pipeline is None:
        raise ConfigError("lmdb create needs --preprocess or --preprocess-template; give the preprocessing the model expects.")
    if len(shape) < 2:
        raise ConfigError(f"shape must be N followed by the sample's dims (e.g. 1,3,224,224), got {shape}.")
    images_at, output_at = resolve_path("the images", images), resolve_path("the LMDB output", output)
    if output_at == images_at or output_at in images_at.parents or images_at in output_at.parents:
        raise ConfigError(
            f"the LMDB '{output}' would be written over or inside the images '{images}'; "
            "int8kit never touches its inputs, choose an output folder outside them."
        )
    source = ImageSource(images, pipeline, strict=strict, workers=workers)  # finds, checks and labels the files
    inside = next((f for f in source.files if output_at in resolve_path("image", f).parents), None)
    if inside is not None:  # an image list can name files inside the LMDB folder being replaced
        raise ConfigError(
            f"image '{inside}' lies inside the LMDB '{output}' being written; int8kit never touches its inputs, "
            "choose another output folder or move the images."
        )
    labels = source.labels()
    per_record, sample_shape = shape[0], tuple(shape[1:])

    def load(index: int) -> tuple[np.ndarray, np.ndarray]:
        path = source.files[index]
        try:
            rgb = decode_rgb(path)
            arr = pipeline(rgb)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"'{path}' failed to decode or preprocess ({exc}); remove or re-save that file.") from None
        if arr.shape != sample_shape:
            raise DataError(
                f"'{path}' preprocesses to shape {arr.shape} but --shape asks {sample_shape} per sample; "
                "change the preprocessing (resize/crop) or --shape."
            )
        return arr, rgb

    n = len(source)
    bar = tqdm(total=n, desc="lmdb create", unit="img", disable=not progress)
    items = parallel_map(load, iter(range(n)), default_workers() if workers is None else workers)
    with LmdbWriter(output, overwrite=overwrite) as writer:
        pos = 0
        for chunk in _chunks(items, per_record):
            batch = np.stack([a for a, _ in chunk])
            writer.put(
                batch,
                labels=None if labels is None else labels[pos : pos + len(chunk)],
                originals=[rgb for _, rgb in chunk] if originals else None,
            )
            pos += len(chunk)
            bar.update(len(chunk))
        records = writer.records
    bar.close()
    return CreateResult(Path(output), n, records, len(source.skipped))
