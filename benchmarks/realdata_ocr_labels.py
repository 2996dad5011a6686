"""Ground truth of the rendered PP-OCRv4 recogniser test lines (benchmarks/realdata_ocr.py): each
line's text as the recogniser's label indices, for a CTC exact-match metric.

The recogniser's classes are rapidocr's: 0 is the CTC blank, 1..6623 the characters of the
model's ``character`` metadata in order, 6624 the space. A line's label is one row of an
(N, L) int64 array, padded with -1.

    python benchmarks/realdata_ocr_labels.py [--test 200]     # writes and prints the .npy path
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.realdata_common import cache_dir  # noqa: E402
from benchmarks.realdata_ocr import rec_onnx, render_text_lines  # noqa: E402

PAD = -1


def rec_characters(model: Path) -> list[str]:
    """The recogniser's classes in output order: blank, the metadata's characters, space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def text_indices(texts: list[str], characters: list[str]) -> np.ndarray:
    """Texts as rows of class indices, padded with ``PAD``."""
    index = {c: i for i, c in enumerate(characters) if i}
    missing = sorted({c for t in texts for c in t if c not in index})
    if missing:
        raise ValueError(f"characters {missing} are not classes of the recogniser")
    out = np.full((len(texts), max(map(len, texts))), PAD, dtype=np.int64)
    for row, text in zip(out, texts):
        row[: len(text)] = [index[c] for c in text]
    return out


def ocr_rec_labels(n: int = 200, seed: int = 1) -> Path:
    """The labels of ``ocr_rec_case``'s ``n`` test lines (seed 1), cached beside their .npz."""
    path = cache_dir() / f"ocr_rec_test_n{n}_s{seed}_labels.npy"
    if not path.exists():
        texts: list[str] = []
        render_text_lines(n, seed, texts)
        np.save(path, text_indices(texts, rec_characters(rec_onnx())))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", type=int, default=200, help="test lines (as bench_ocr --test)")
    print(ocr_rec_labels(ap.parse_args(argv).test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
