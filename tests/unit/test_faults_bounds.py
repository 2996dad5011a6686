"""Every accepted option value and data file runs in bounded memory: IFMR's candidate count is
bounded (or refused with the step that fits), compressed .npz members are streamed."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from int8kit.calib.histogram import Histogram
from int8kit.data.sources import InputSpec, batches_from
from int8kit.errors import ConfigError, DataError
from int8kit.thresholds import compute_range
from int8kit.thresholds.base import Target


def _hist() -> Histogram:
    return Histogram.from_values(np.random.default_rng(0).normal(size=20_000).astype(np.float32), bins=512)


@pytest.mark.parametrize("params, fits", [
    ({"search_step": 1e-6}, "6e-05"),
    ({"search_step": 1e-12}, "6e-05"),
    ({"search_range": (0.001, 1000)}, "0.1"),
])
def test_ifmr_candidates_beyond_the_bound_are_refused_with_the_step_that_fits(params, fits):
    with pytest.raises(ConfigError, match=rf"more than the 10,000 .*at least {fits}"):
        compute_range("ifmr", _hist(), Target(), **params)


def test_ifmr_at_the_bound_runs_in_bounded_memory():
    h = _hist()
    tracemalloc.start()
    lo, hi = compute_range("ifmr", h, Target(), search_range=(0.5, 1.4999), search_step=1e-4)  # 10 000 factors
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 0 < hi and peak < 32 << 20  # edges x 256 candidates per block, not edges x 10 000


def test_a_compressed_npz_is_streamed_batch_by_batch(tmp_path):
    big = np.zeros((1024, 3, 64, 64), np.float32)  # 48 MiB inflated, a few hundred KB compressed
    big[:, 0, 0, 0] = np.arange(1024)
    path = tmp_path / "calib.npz"
    np.savez_compressed(path, x=big)
    del big
    spec = [InputSpec("x", np.dtype(np.float32), (None, 3, 64, 64))]
    tracemalloc.start()
    seen = [b["x"][:, 0, 0, 0] for b in batches_from(path, spec, batch_size=8, iterations=32)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.concatenate(seen).tolist() == list(range(32))
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB for 32 samples of a 48 MiB array"
    # every sample, in order, as the uncompressed file gives them
    every = np.concatenate([b["x"][:, 0, 0, 0] for b in batches_from(path, spec, batch_size=100)])
    assert every.tolist() == list(range(1024))


def test_a_compressed_member_shorter_than_its_header_is_one_line(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez_compressed(path, x=np.ones((64, 4), np.float32))
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("x.npy")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.npz.*truncated"):
        batches_from(path, [InputSpec("x", np.dtype(np.float32), (None, 4))])


def test_a_compressed_member_that_must_be_inflated_whole_is_bounded(tmp_path):
    path = tmp_path / "f.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("x.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": True, "shape": (1 << 20, 128)})
        zeros = bytes(1 << 20)
        for _ in range(512):  # 512 MiB of zeros, Fortran order: rows are not contiguous, no streaming
            out.write(zeros)
    with pytest.raises(DataError, match="Fortran-order array of 512 MiB.*C order"):
        batches_from(path, [InputSpec("x", np.dtype(np.float32), (None, 128))])
    small = np.asfortranarray(np.arange(64, dtype=np.float32).reshape(16, 4))
    np.savez_compressed(tmp_path / "small.npz", x=small)  # small Fortran arrays still load whole
    got = np.concatenate([b["x"] for b in batches_from(tmp_path / "small.npz", [InputSpec("x", np.dtype(np.float32), (None, 4))])])
    assert got.tolist() == small.tolist()
