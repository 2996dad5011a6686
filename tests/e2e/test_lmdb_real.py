"""EfficientNet-Lite0 quantized from an image folder and from an LMDB made of the same images.

``int8kit lmdb create`` stores exactly the arrays the folder's preprocessing produces, so both
``int8kit quantize`` runs must see identical calibration statistics and write identical scales.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from int8kit.calib.stats import Stats
from int8kit.cli import main

pytestmark = pytest.mark.e2e

# EfficientNet-Lite: shorter side 256, centre 224, (x - 127) / 128, RGB
PRE = "resize_side=256;crop_h=224,crop_w=224;mean_value=127:127:127,scale=0.0078125;bgr2rgb"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    pytest.importorskip("skimage", reason="real photos come from scikit-image")
    from PIL import Image

    from benchmarks.realdata import natural_photos

    photos = natural_photos()[:8]
    if len(photos) < 8:
        pytest.skip(f"only {len(photos)} real photos available (scikit-image / darknet data); the test needs 8")
    root = tmp_path_factory.mktemp("photos")
    for i, p in enumerate(photos):
        Image.fromarray(p).save(root / f"photo_{i}.jpg", quality=92)
    return root


def test_quantize_from_folder_and_lmdb_is_identical(effnet_case, photo_folder, tmp_path, capsys):
    model = str(effnet_case[0])
    db = tmp_path / "calib_lmdb"
    assert main(["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE,
                 "--shape", "4,3,224,224", "-o", str(db), "--no-progress"]) == 0
    runs = {
        "folder": ["--data", str(photo_folder), "--preprocess", PRE],
        "lmdb": ["--data", str(db)],
    }
    for name, data in runs.items():
        rc = main(["quantize", model, *data, "--batch", "4", "-o", str(tmp_path / name),
                   "--dump-stats", str(tmp_path / f"{name}_stats.npz"), "--no-progress"])
        assert rc == 0, capsys.readouterr().err
    a, b = Stats.load(tmp_path / "folder_stats.npz"), Stats.load(tmp_path / "lmdb_stats.npz")
    assert a.samples == b.samples == 8 and set(a.tensors) == set(b.tensors) and len(a.tensors) > 50
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert (ta.min, ta.max, ta.hist.edge) == (tb.min, tb.max, tb.hist.edge), name
        assert np.array_equal(ta.hist.counts, tb.hist.counts), name
    models = [onnx.load(str(next((tmp_path / n).glob("*_int8.onnx")))) for n in runs]
    inits = [{t.name: t.SerializeToString() for t in m.graph.initializer} for m in models]
    assert inits[0] == inits[1]  # identical scales, zero points and weights
