"""Cut batches into pieces whose run returns a bounded number of bytes.

A batch of 32 images is cheap as input and expensive as output when every intermediate tensor is
fetched (PP-OCRv4 det, 8 pages at 640x640: 8 GB of tapped tensors; one page: 1.2 GB), and
onnxruntime's arena keeps its high-water mark for good. So a pass that fetches many tensors runs
its first piece on one sample, measures the bytes it returned, and sizes every later piece to
about ``budget`` bytes (at least one sample).

    chunker = Chunker(splittable=True)
    for piece in chunker.pieces(batch):
        outs = session.run(names, piece)
        chunker.returned(outs, piece)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

# Bytes one run may return. onnxruntime's arena keeps its high-water mark: 256 MB runs held
# ~1.1-1.3 GB resident on EfficientNet-Lite0 calibration, 32 MB runs ~0.38 GB at the same speed.
RUN_BYTES = 32 << 20

Batch = Mapping[str, np.ndarray]


def rows(batch: Batch) -> int:
    """Samples in a batch (its first input's first axis; 0 for an empty batch)."""
    return len(next(iter(batch.values()))) if batch else 0


class Chunker:
    """Splits batches into pieces of about ``budget`` returned bytes; remembers the size it measured.

    ``splittable=False`` (a model with a fixed batch size) passes every batch through whole.
    ``limit`` stops after that many samples in all (the per-layer pass reads at most 32).
    """

    def __init__(self, *, budget: int = RUN_BYTES, splittable: bool = True, limit: int | None = None) -> None:
        if budget < 1:
            raise ValueError(f"chunk budget must be at least 1 byte, got {budget}")
        self.budget, self.splittable, self.limit = budget, splittable, limit
        self.step: int | None = 1 if splittable else None  # first piece: one sample, to measure
        self.seen = 0  # samples handed out so far

    @property
    def done(self) -> bool:
        """True once ``limit`` samples were handed out."""
        return self.limit is not None and self.seen >= self.limit

    def pieces(self, batch: Batch) -> Iterator[dict[str, np.ndarray]]:
        """The pieces of ``batch`` in order (views, no copies); call ``returned`` after each run."""
        size, start = rows(batch), 0
        while start < size and not self.done:
            step = size - start if self.step is None else self.step
            if self.limit is not None and self.splittable:
                step = min(step, self.limit - self.seen)
            piece = dict(batch) if start == 0 and step >= size else {k: v[start : start + step] for k, v in batch.items()}
            got = rows(piece)
            start += got
            self.seen += got
            yield piece

    def returned(self, outputs: Iterable[np.ndarray], piece: Batch) -> None:
        """Size later pieces by the bytes this piece's run returned per sample."""
        self.measured(sum(int(np.asarray(o).nbytes) for o in outputs) / max(rows(piece), 1))

    def measured(self, per_sample: float) -> None:
        """Size later pieces by ``per_sample`` bytes a sample costs (for a caller that counts them
        itself, e.g. calibration, whose reductions inside onnxruntime cost more than they return)."""
        if self.splittable:
            self.step = max(1, int(self.budget // max(per_sample, 1.0)))
