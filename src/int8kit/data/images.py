"""Image folders and image lists as a ``SampleSource``: decode with Pillow, preprocess in parallel.

A folder is walked recursively in sorted path order (hidden files and folders skipped). When every
image sits inside a sub-folder, the first-level sub-folder is the class: its name as the label
when all class names are integers (``0/``, ``1/``, ...), else its index among the sorted names
(ImageNet's ``n01440764/`` ... folders give the usual class indices).

A list file (``ImageList.txt``) has one image path per line, relative to the list's own folder
or absolute; ``path label`` lines (an integer last column) give labels; blank lines and ``#``
comments are ignored.

Every candidate's header is read when the source opens (cheap, in the worker pool): files that
are not readable images are skipped with one warning and a count, or stop with a ``DataError``
under ``strict``. Decoding (EXIF orientation applied, converted to RGB) and the ``Pipeline``
run in a thread pool with bounded prefetch, yielding in order: Pillow releases the GIL while it
decodes and resizes, so threads scale without copying results between processes.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from int8kit.data.preprocess import Pipeline, parse_preprocess
from int8kit.data.samples import UNNAMED, Sample, SampleSource
from int8kit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_ORIENTATION = 0x0112  # the EXIF tag that says how the camera was held


def default_workers() -> int:
    """Decode threads: the machine's cores, at most 8 (more only adds memory; inference needs cores too)."""
    return max(1, min(8, os.cpu_count() or 1))


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as a Pillow RGB image, upright per its EXIF orientation."""
    with Image.open(path) as img:
        if img.getexif().get(_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            # 16-bit grey (PNG): Pillow's convert clips to 255 (all white); keep the top 8 bits
            arr = np.asarray(img, dtype=np.int64)
            img = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).clip(0, 255).astype(np.uint8), "L")
        return img.convert("RGB")


def decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as an (H, W, 3) uint8 RGB array, upright per its EXIF orientation."""
    return np.asarray(open_rgb(path))


def load_image(path: str | os.PathLike, pipeline: Pipeline) -> np.ndarray:
    """Decode and preprocess one image; an op that does not fit it names the image (a
    module-level function, so process pools can pickle it)."""
    try:
        return pipeline.apply_pil(open_rgb(path))
    except DataError as exc:  # a crop or pad that does not fit: say which image
        raise DataError(f"image '{path}': {exc}") from None


def _probe(path: str) -> str | None:
    """Why ``path`` is not a readable image (``None`` if its header reads)."""
    try:
        with Image.open(path) as img:
            if img.width < 1 or img.height < 1:
                return "empty image"
        return None
    except FileNotFoundError:
        return "no such file"
    except UnidentifiedImageError:
        return "not an image format Pillow reads"
    except Exception as exc:  # Pillow raises many types for non-images and broken headers
        return type(exc).__name__ if not str(exc) else str(exc).split(";")[0][:80]


def _walk(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(folder) / n for n in sorted(names) if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(root).parts)


def _read_list(path: Path) -> tuple[list[Path], list[int] | None]:
    """Paths (relative to the list's folder) and labels of an image list file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"image list '{path}' cannot be read ({exc}); expected a UTF-8 text file, one image path per line.") from None
    paths, labels = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        label = int(tokens[-1]) if len(tokens) > 1 and tokens[-1].lstrip("-").isdigit() else None
        entry = line[: line.rfind(tokens[-1])].strip() if label is not None else line
        paths.append((number, path.parent / entry))
        labels.append(label)
    have = [label is not None for label in labels]
    if any(have) and not all(have):
        missing = next(n for (n, _), h in zip(paths, have) if not h)
        raise DataError(
            f"image list '{path}' gives labels on some lines but not on line {missing}; "
            "write 'path label' on every line or on none."
        )
    return [p for _, p in paths], (labels if paths and all(have) else None)


def _folder_labels(root: Path, images: list[Path]) -> tuple[list[int] | None, list[str] | None]:
    """Class labels from first-level sub-folders when every image is inside one."""
    parts = [p.relative_to(root).parts for p in images]
    if not images or any(len(x) < 2 for x in parts):
        return None, None
    classes = sorted({x[0] for x in parts})
    if all(c.isdigit() for c in classes):
        return [int(x[0]) for x in parts], classes
    index = {c: i for i, c in enumerate(classes)}
    return [index[x[0]] for x in parts], classes


#: memory the decoded-ahead images may take, and the most images to keep ahead
PREFETCH_BYTES, PREFETCH_MAX = 256 << 20, 64


def _window(sample: Sample, workers: int) -> int:
    """Images to decode ahead: enough to cover whole batches while the model runs, within PREFETCH_BYTES.

    The consumer takes a batch (32 images) at once and then runs the model; a window smaller than
    a batch would leave the workers idle during inference and make the consumer wait for them.
    """
    nbytes = max(1, sum(a.nbytes for a in sample.inputs.values()))
    return int(max(2 * workers, min(PREFETCH_MAX, PREFETCH_BYTES // nbytes)))


class ImageSource(SampleSource):
    """Images from a folder (recursive) or a list file, decoded and preprocessed in parallel, in order.

    ``pipeline``: a ``Pipeline`` or a preprocessing string. ``strict``: a file that is not a
    readable image raises ``DataError`` instead of being skipped. ``workers``: decode threads
    (default ``default_workers()``; 0 decodes in the calling thread). ``prefetch``: images decoded
    ahead (default: as many as fit in 256 MiB, at most 64: two batches). ``executor``: "thread"
    (default) or "process". ``class_labels``: take labels from class sub-folders.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        pipeline: Pipeline | str,
        *,
        strict: bool = False,
        workers: int | None = None,
        prefetch: int | None = None,
        executor: str = "thread",
        input_name: str = UNNAMED,
        class_labels: bool = True,
    ):
        self.path = Path(path)
        self.pipeline = parse_preprocess(pipeline) if isinstance(pipeline, str) else pipeline
        if not isinstance(self.pipeline, Pipeline):
            raise ConfigError(f"ImageSource needs a preprocessing Pipeline or string, got {type(pipeline).__name__}.")
        if executor not in ("thread", "process"):
            raise ConfigError(f"executor must be 'thread' or 'process', got '{executor}'.")
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.prefetch = prefetch  # None: sized from the first sample (see _window)
        self.executor, self.input_name = executor, input_name
        self.classes: list[str] | None = None
        if self.path.is_dir():
            self.description = f"image folder '{self.path}'"
            candidates, list_labels = _walk(self.path), None
        elif self.path.is_file():
            self.description = f"image list '{self.path}'"
            candidates, list_labels = _read_list(self.path)
        else:
            raise DataError(f"image data '{self.path}' does not exist; expected a folder of images or an image list .txt file.")
        self.files, self._labels, self.skipped = self._check(candidates, list_labels, strict)
        if not self.files:
            why = f" ({len(self.skipped)} files are not readable images)" if self.skipped else ""
            raise DataError(f"{self.description} holds no images{why}; expected JPEG/PNG/... files, put the images there.")
        if list_labels is None and class_labels and self.path.is_dir():
            self._labels, self.classes = _folder_labels(self.path, self.files)

    def sample_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The preprocessing's output shape when it does not depend on the image size, else ``None``."""
        shape = self.pipeline.fixed_output_shape()
        return None if shape is None else {self.input_name: shape}

    def _check(self, candidates: list[Path], labels: list[int] | None, strict: bool):
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            reasons = list(pool.map(_probe, map(str, candidates)))
        bad = [(p, r) for p, r in zip(candidates, reasons) if r is not None]
        if bad and strict:
            first, why = bad[0]
            raise DataError(
                f"{self.description}: '{first}' is not a readable image ({why}), {len(bad)} such file(s) in all; "
                "remove them or drop --strict to skip them."
            )
        if bad:
            names = ", ".join(f"{p.name} ({r})" for p, r in bad[:3]) + (", ..." if len(bad) > 3 else "")
            log.warning("%s: skipped %d of %d files that are not readable images: %s", self.description, len(bad), len(candidates), names)
        keep = [i for i, r in enumerate(reasons) if r is None]
        return [candidates[i] for i in keep], (None if labels is None else [labels[i] for i in keep]), [p for p, _ in bad]

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> list[Any] | None:
        return None if self._labels is None else list(self._labels)

    def _sample(self, index: int, array: np.ndarray) -> Sample:
        return Sample({self.input_name: array}, None if self._labels is None else self._labels[index])

    def _failed(self, index: int, exc: Exception) -> DataError:
        return DataError(
            f"{self.description}: '{self.files[index]}' passed the header check but failed to decode or preprocess "
            f"({exc}); remove or re-save that file."
        )

    def __iter__(self) -> Iterator[Sample]:
        paths = [str(p) for p in self.files]
        if self.workers == 0:
            for i, path in enumerate(paths):
                try:
                    yield self._sample(i, load_image(path, self.pipeline))
                except (OSError, ValueError, SyntaxError) as exc:
                    raise self._failed(i, exc) from None
            return
        pool: Executor = (ThreadPoolExecutor if self.executor == "thread" else ProcessPoolExecutor)(self.workers)
        pending: deque = deque()
        try:
            # bounded prefetch: at most ``window`` decoded images wait in memory
            window = self.prefetch or 2 * self.workers
            for i, path in enumerate(paths):
                pending.append(pool.submit(load_image, path, self.pipeline))
                if len(pending) >= window:
                    sample = self._result(i - len(pending) + 1, pending.popleft())
                    if self.prefetch is None and i + 1 == window:
                        window = _window(sample, self.workers)
                    yield sample
            start = len(paths) - len(pending)
            for offset in range(len(pending)):
                yield self._result(start + offset, pending.popleft())
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _result(self, index: int, future) -> Sample:
        try:
            return self._sample(index, future.result())
        except DataError as exc:
            raise DataError(f"{self.description}: '{self.files[index]}': {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise self._failed(index, exc) from None
