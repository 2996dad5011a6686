"""Sample sources: datasets read one preprocessed sample at a time (image folders, LMDB, Caffe Data layers).

A ``SampleSource`` knows nothing about batching or the model: it yields ``Sample`` objects in a
deterministic order, can be iterated again, and says how many it holds. ``SampleBatches`` (in
``int8kit.data.sources``) turns any of them into validated model batches, so every source feeds
``calibrate``, ``quantize`` and ``eval`` the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: key for a sample whose source does not know the model's input name (single-input models)
UNNAMED = ""


@dataclass(frozen=True)
class Sample:
    """One sample: arrays without a batch axis keyed by input name (or ``UNNAMED``), and its label."""

    inputs: dict[str, np.ndarray]
    label: Any = None


class SampleSource(ABC):
    """A finite, re-iterable dataset of samples in a fixed order."""

    #: what the source is, for messages ("image folder 'photos/'", "LMDB 'calib_lmdb'")
    description: str = "the data source"

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples one full iteration yields."""

    @abstractmethod
    def __iter__(self) -> Iterator[Sample]:
        """Yield every sample once, in the same order each time."""

    def labels(self) -> list[Any] | None:
        """Every sample's label in iteration order without decoding the data, or ``None`` if unlabelled."""
        return None

    def sample_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The one shape every sample of each input has, by input name, when the source guarantees
        it (calibration then sizes a model's dynamic dims by it), else ``None``."""
        return None

    def close(self) -> None:
        """Release files, environments or worker pools."""
