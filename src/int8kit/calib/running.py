"""Running per-tensor statistics: each batch folds into a ``RunningStats`` state at once.

Split from ``collect`` (which runs the model): this module only reduces arrays. Extremes and
per-channel statistics read every value; the histogram may read a fixed strided subset of each
sample (``histogram_stride``), the same whatever the batching, so merged halves still equal one pass.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from int8kit.calib.histogram import Histogram, edge_for
from int8kit.calib.stats import TensorStats, widen_counts
from int8kit.errors import CalibrationError

log = logging.getLogger(__name__)

# Smallest edge: keeps bins/edge finite in float32 for all-zero tensors.
_MIN_EDGE = 2.0**-100
# Elements histogrammed per step: small enough that the float and index buffers stay in cache.
_CHUNK = 1 << 16

def _edge_covering(lo: float, hi: float) -> float:
    """Smallest power-of-two edge with ``-edge <= lo`` and ``hi < edge``.

    ``hi`` must stay strictly below the edge: bins are half-open, and a value equal to the edge
    would have to be clipped into the last bin, which breaks exact re-binning when the edge doubles.
    """
    edge = max(edge_for(max(-lo, hi, 0.0)), _MIN_EDGE)
    return edge * 2.0 if hi >= edge else edge


class RunningStats:
    """Running statistics of one tensor, updated batch by batch."""

    def __init__(self, name: str, bins: int, axis: int | None, per_sample: int | None = None):
        self.name = name
        self.per_sample = per_sample
        self.bins = bins
        self.axis = axis
        self.counts = np.zeros(2 * bins, dtype=np.int64)
        self.edge: float | None = None
        self.lo = np.inf
        self.hi = -np.inf
        self.cmin: np.ndarray | None = None
        self.cmax: np.ndarray | None = None
        self.csum: np.ndarray | None = None
        self.values = 0  # every value seen (min/max/sums read all; the histogram may read a subset)
        self.channels_ok = axis is not None

    def update(self, x: np.ndarray, batch: int, bufs: "Buffers") -> None:
        """Fold one batch in, block by block: each block is read from memory once, for extremes and histogram.

        Extremes and per-channel statistics read every value. The histogram reads every value too
        unless ``per_sample`` caps it: then it reads a fixed strided subset of every sample (see
        ``histogram_stride``), the same whatever the batching, so merged halves still equal one pass.
        """
        if x.size == 0:
            return
        self.values += x.size
        exact = x.dtype == np.float32
        if not exact:  # float16/64: histogram the float32 values, keep the exact extremes
            lo, hi = float(x.min()), float(x.max())
            self._check_finite(lo, hi, batch, x)
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
            x = x.astype(np.float32)
        x = np.ascontiguousarray(x)
        n = x.shape[0] if x.ndim else 1
        stride = histogram_stride(x.size // max(n, 1), self.per_sample)
        rows = self._channel_rows(x, stride)
        if rows is None:
            if stride == 1:
                flat = x.reshape(-1)
                for start in range(0, flat.size, _CHUNK):
                    block = flat[start : start + _CHUNK]
                    self._fold(block, float(block.min()), float(block.max()), exact, batch, x, bufs)
                return
            # Samples longer than the cap (rare here: per-channel rows take conv activations): every
            # stride-th value of each sample.
            sub = np.ascontiguousarray(x.reshape(n, -1)[:, ::stride])
            self._fold(sub, float(x.min()), float(x.max()), exact, batch, x, bufs)
            return
        rmin = np.empty(rows.shape[0], dtype=np.float32)
        rmax = np.empty(rows.shape[0], dtype=np.float32)
        rsum = np.empty(rows.shape[0], dtype=np.float32)
        step = max(1, _CHUNK // rows.shape[1])
        # Strided subset (stride > 1): every row is one channel plane of one sample, and its
        # stride-th columns are gathered while the block is in cache, then histogrammed at once
        # (binning at the final edge equals binning early and widening, see Buffers.histogram).
        width = -(-rows.shape[1] // stride)
        sub = None if stride == 1 else np.empty((rows.shape[0], width), dtype=np.float32)
        lo, hi = np.inf, -np.inf
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step]
            lo_rows = np.min(block, axis=1, out=rmin[start : start + step])
            hi_rows = np.max(block, axis=1, out=rmax[start : start + step])
            np.sum(block, axis=1, out=rsum[start : start + step])
            if sub is None:
                self._fold(block, float(lo_rows.min()), float(hi_rows.max()), exact, batch, x, bufs)
            else:
                np.copyto(sub[start : start + step], block[:, ::stride])
                lo, hi = min(lo, float(lo_rows.min())), max(hi, float(hi_rows.max()))
        if sub is not None:
            self._fold(sub, lo, hi, exact, batch, x, bufs)
        c = x.shape[self.axis]  # type: ignore[index]
        csum = rsum.reshape(-1, c).sum(axis=0, dtype=np.float64)
        # Row r of the (outer*C, inner) view belongs to channel r % C.
        self._fold_channels(rmin.reshape(-1, c).min(axis=0), rmax.reshape(-1, c).max(axis=0), csum)

    def _fold(
        self, values: np.ndarray, lo: float, hi: float, exact: bool, batch: int, x: np.ndarray, bufs: "Buffers"
    ) -> None:
        """Fold extremes ``lo``/``hi`` (of the values read, a superset of ``values``) and the histogram of ``values``."""
        self._check_finite(lo, hi, batch, x)
        if exact:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        need = _edge_covering(lo, hi)
        if self.edge is None:
            self.edge = need
        elif need > self.edge:
            # Doubling merges bin pairs exactly, so growing mid-batch gives the same counts as one big edge.
            self.counts = widen_counts(self.counts, int(round(np.log2(need / self.edge))))
            self.edge = need
        self.counts += bufs.histogram(values.reshape(-1), self.bins, self.edge)

    @staticmethod
    def update_reduced_all(
        items: list[tuple["RunningStats", np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]], batch: int, bufs: "Buffers"
    ) -> None:
        """Fold one piece of many tensors reduced inside onnxruntime (see ``taps.add_reductions``),
        ``(state, rmin, rmax, rsum, sub, per_sample)`` each: row minima, maxima and sums over every
        value, and the same histogram subset ``update`` would read. The rows of all tensors are
        reduced together in a few NumPy calls instead of a dozen per tensor (with one-sample pieces
        the calls, not the arithmetic, were the cost)."""
        items = [it for it in items if it[1].shape[0] and it[5]]
        if not items:
            return
        n = items[0][1].shape[0]
        widths = [it[1].size // n for it in items]
        starts = np.cumsum([0] + widths[:-1])
        rmin, rmax, rsum = (np.concatenate([it[k].reshape(n, -1) for it in items], axis=1) for k in (1, 2, 3))
        cmin, cmax = rmin.min(axis=0), rmax.max(axis=0)
        csum = rsum.sum(axis=0, dtype=np.float64)
        lo_t, hi_t = np.minimum.reduceat(cmin, starts), np.maximum.reduceat(cmax, starts)
        # onnxruntime's ReduceMin/Max skip NaN; the row sums do not.
        nan_t = np.logical_or.reduceat(np.isnan(rsum).any(axis=0), starts)
        for (state, rows_min, _, _, sub, per_sample), a, w, lo, hi, nan in zip(items, starts, widths, lo_t.tolist(), hi_t.tolist(), nan_t):
            state.values += n * per_sample
            if nan or not (math.isfinite(lo) and math.isfinite(hi)):
                state._raise_non_finite(None, batch)
            state._fold(np.ascontiguousarray(sub), lo, hi, True, batch, sub, bufs)
            if rows_min.ndim == 2 and state.channels_ok:
                state._fold_channels(cmin[a : a + w], cmax[a : a + w], csum[a : a + w])

    def _check_finite(self, lo: float, hi: float, batch: int, x: np.ndarray) -> None:
        if np.isfinite(lo) and np.isfinite(hi):
            return
        self._raise_non_finite(x.size - int(np.count_nonzero(np.isfinite(x))), batch)

    def _raise_non_finite(self, bad: int | None, batch: int) -> None:
        count = "" if bad is None else f"{bad} "
        raise CalibrationError(
            f"tensor '{self.name}' has {count}NaN/Inf values in batch {batch}; expected finite activations, "
            "check the input data (scaling, NaN) or the model (overflow)."
        )

    def _channel_rows(self, x: np.ndarray, stride: int = 1) -> np.ndarray | None:
        """A (outer*C, inner) view when per-channel extremes can ride along the blocks, else ``None``.

        Short rows (channel-last tensors such as (N, C) matmul outputs) get their per-channel
        extremes from one extra pass here instead; those tensors are small.
        """
        axis = self.axis
        if not self.channels_ok or axis is None:
            return None
        if x.ndim < 2 or axis >= x.ndim or (self.cmin is not None and self.cmin.shape != (x.shape[axis],)):
            log.debug("tensor '%s' has no stable channel axis %s; per-channel ranges dropped", self.name, axis)
            self.channels_ok, self.cmin, self.cmax, self.csum = False, None, None, None
            return None
        inner = int(np.prod(x.shape[axis + 1 :]))
        if inner >= 64:
            return x.reshape(-1, inner)
        x3 = x.reshape(-1, x.shape[axis], inner)
        csum = x3.sum(axis=(0, 2), dtype=np.float64)
        self._fold_channels(x3.min(axis=(0, 2)), x3.max(axis=(0, 2)), csum)
        return None

    def _fold_channels(self, cmin: np.ndarray, cmax: np.ndarray, csum: np.ndarray) -> None:
        if self.cmin is None or self.cmax is None or self.csum is None:
            self.cmin, self.cmax, self.csum = cmin.copy(), cmax.copy(), csum.astype(np.float64)
        else:
            np.minimum(self.cmin, cmin, out=self.cmin)
            np.maximum(self.cmax, cmax, out=self.cmax)
            self.csum += csum

    def merge(self, other: "RunningStats") -> None:
        """Fold in the state of the same tensor over other samples (another worker's): exact,
        the histogram of the narrower edge widens by bin-pair sums, as when one state's edge grows."""
        self.values += other.values
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        if other.edge is not None:
            if self.edge is None:
                self.counts, self.edge = other.counts.copy(), other.edge
            else:
                edge = max(self.edge, other.edge)
                self.counts = widen_counts(self.counts, int(round(np.log2(edge / self.edge)))) + widen_counts(
                    other.counts, int(round(np.log2(edge / other.edge)))
                )
                self.edge = edge
        if not other.channels_ok:
            self.channels_ok, self.cmin, self.cmax, self.csum = False, None, None, None
        elif self.channels_ok and other.cmin is not None:
            if self.cmin is not None and self.cmin.shape != other.cmin.shape:
                self.channels_ok, self.cmin, self.cmax, self.csum = False, None, None, None
            else:
                self._fold_channels(other.cmin, other.cmax, other.csum)  # type: ignore[arg-type]

    def result(self) -> TensorStats:
        if self.edge is None:  # the tensor was always empty
            hist = Histogram(counts=self.counts, edge=edge_for(0.0), min=0.0, max=0.0)
        else:
            hist = Histogram(counts=self.counts, edge=self.edge, min=float(self.lo), max=float(self.hi))
        keep = self.channels_ok and self.cmin is not None
        if not keep:
            return TensorStats(hist, values=self.values)
        return TensorStats(hist, self.cmin, self.cmax, self.csum, values=self.values)


class Buffers:
    """Scratch buffers of the reducing thread (reused: no allocation per block)."""

    def __init__(self) -> None:
        self.f = np.empty(_CHUNK, dtype=np.float32)
        self.i = np.empty(_CHUNK, dtype=np.int32)
        self._offsets: dict[int, np.ndarray] = {}

    def _offset(self, bins: int) -> np.ndarray:
        # bins + 0 for even positions, bins + 2*bins for odd ones: two interleaved histograms, so
        # runs of equal values (the zeros after ReLU) do not serialise bincount's increments.
        if bins not in self._offsets:
            self._offsets[bins] = (bins + (np.arange(_CHUNK) % 2) * 2 * bins).astype(np.float32)
        return self._offsets[bins]

    def histogram(self, flat: np.ndarray, bins: int, edge: float) -> np.ndarray:
        """Counts of ``flat`` in ``2*bins`` bins over ``[-edge, edge)``.

        Index = floor(x * bins/edge) + bins: the scale is a power of two, so the product and the
        floor are exact and a value lands in the same bin whatever edge it was binned at (up to
        the exact pair merge). Adding the offset after the floor is exact too; before it would round.
        """
        scale = np.float32(bins / edge)
        offset = self._offset(bins)
        total = None
        for start in range(0, flat.size, _CHUNK):
            part = flat[start : start + _CHUNK]
            y = self.f[: part.size]
            np.multiply(part, scale, out=y)
            np.floor(y, out=y)
            np.add(y, offset[: part.size], out=y)
            idx = self.i[: part.size]
            # float32 -> int32 is a fast SIMD cast (float32 -> intp is ~10x slower).
            np.copyto(idx, y, casting="unsafe")
            counts = np.bincount(idx, minlength=4 * bins)
            if total is None:  # one chunk (most calls): no zeroed array, no extra pass
                total = counts
            else:
                total += counts
        if total is None:
            return np.zeros(2 * bins, dtype=np.int64)
        return total[: 2 * bins] + total[2 * bins :]


def histogram_stride(per_sample_values: int, cap: int | None) -> int:
    """Step of the histogrammed subset: every value (1) unless a sample has more than ``cap``."""
    if cap is None or per_sample_values <= cap:
        return 1
    return -(-per_sample_values // cap)
