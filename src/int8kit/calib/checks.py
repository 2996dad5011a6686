"""Checks of the data a calibration pass saw, reported once when the pass ends.

Constant calibration data quantizes without any error: a loader that yields black images (a
failed decode, a normalisation that rounds to 0) gives every range after the input nothing to
measure, and the INT8 model is wrong on real data. A constant input can be legitimate (an
image-size or scale-factor input), so this warns instead of failing.

The statistics hold only the inputs some plan could quantize (an image-size input feeding a
Resize is not tapped), so the batches' float inputs are watched as they stream by instead: one
min and max per input and batch, next to a model run that costs far more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from int8kit.data.sources import Batch, DataSource
from int8kit.data.specs import InputSpec

log = logging.getLogger(__name__)


class InputWatch(DataSource):
    """Passes ``source``'s batches through and keeps the extremes of every float input."""

    def __init__(self, source: DataSource, specs: list[InputSpec]):
        self.source = source
        self.num_samples, self.batch_size = source.num_samples, source.batch_size
        self.sample_shapes = source.sample_shapes
        self.names = [s.name for s in specs if s.is_float]
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}
        self.samples = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.source:
            for name in self.names:
                values = batch.get(name)
                if values is not None and values.size:
                    self.low[name] = min(self.low.get(name, np.inf), float(values.min()))
                    self.high[name] = max(self.high.get(name, -np.inf), float(values.max()))
            self.samples += len(next(iter(batch.values()))) if batch else 0
            yield batch

    def constant(self) -> dict[str, float]:
        """Float inputs whose every value was the same over all samples (name -> that value)."""
        return {n: self.low[n] for n in self.names if n in self.low and self.low[n] == self.high[n]}


def warn_constant_inputs(watch: InputWatch) -> dict[str, float]:
    """Log one warning naming every float input that was constant over the pass; returns them."""
    found = watch.constant()
    if found:
        many = len(found) > 1
        listed = ", ".join(f"'{n}' (always {v:g}{', all zeros' if v == 0 else ''})" for n, v in found.items())
        log.warning(
            "calibration input%s %s %s constant over all %d samples; expected varying data, so the ranges after it "
            "measure nothing and the INT8 model may be wrong on real data; check how the data is loaded (blank or "
            "undecoded images, a normalisation that rounds to 0), or ignore this if the input is constant by design "
            "(an image size)",
            "s" if many else "", listed, "are" if many else "is", watch.samples,
        )
    return found
