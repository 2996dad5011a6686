"""``int8kit quantize`` on EfficientNet-Lite0 fed by a folder of real JPEG photos + a preprocessing string.

The statistics must equal those of the same photos preprocessed by an independent Pillow/NumPy
recipe and passed as an array, and the INT8 model must agree with FP32 on those photos.
"""
from __future__ import annotations

import json

import numpy as np

import pytest

import int8kit
from int8kit.calib.stats import Stats
from int8kit.cli import main

from benchmarks.bench_eval import cosines, run_model

pytestmark = pytest.mark.e2e

PREPROCESS = "resize_side=256;crop_h=224,crop_w=224;mean_value=127,std=128;bgr2rgb"  # RGB, (x-127)/128


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """32 JPEGs (random-resized crops of the scikit-image / darknet photos) in class folders 0/ and 1/."""
    pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    from PIL import Image

    from benchmarks.realdata import _crop_box, natural_photos

    photos = [Image.fromarray(p) for p in natural_photos()]
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("photos")
    for i in range(32):
        img = photos[i % len(photos)]
        box = _crop_box(rng, img.height, img.width)
        size = (int(rng.integers(240, 480)), int(rng.integers(240, 480)))
        (root / str(i % 2)).mkdir(exist_ok=True)
        img.resize(size, Image.BILINEAR, box=box).save(root / str(i % 2) / f"{i:02d}.jpg", quality=90)
    return root


def _reference(folder) -> np.ndarray:
    """The same recipe written directly with Pillow and NumPy, in ImageSource's file order."""
    from PIL import Image

    out = []
    for path in sorted(folder.rglob("*.jpg"), key=lambda p: p.relative_to(folder).parts):
        img = Image.open(path).convert("RGB")
        s = 256 / min(img.size)
        img = img.resize((int(img.width * s + 0.5), int(img.height * s + 0.5)), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
        t, l = (arr.shape[0] - 224) // 2, (arr.shape[1] - 224) // 2
        out.append(((arr[t : t + 224, l : l + 224] - 127) / 128).transpose(2, 0, 1))
    return np.stack(out)


def test_quantize_from_image_folder(effnet_case, photo_folder, tmp_path, capsys):
    model = effnet_case[0]
    stats_path = tmp_path / "stats.npz"
    code = main([
        "quantize", str(model), "--data", str(photo_folder), "--preprocess", PREPROCESS,
        "--iterations", "32", "--per-channel", "-o", str(tmp_path / "out"), "--dump-stats", str(stats_path), "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    from_images = Stats.load(stats_path)
    assert from_images.samples == 32

    reference = _reference(photo_folder)
    from_arrays = int8kit.calibrate(model, reference, progress=False).stats
    assert set(from_arrays.tensors) == set(from_images.tensors)
    for name, ts in from_arrays.tensors.items():  # same pixels in, same statistics out
        got = from_images[name]
        assert (got.min, got.max) == (ts.min, ts.max), name
        np.testing.assert_array_equal(got.hist.counts, ts.hist.counts, err_msg=name)

    int8 = next((tmp_path / "out").glob("*_int8.onnx"))
    fp32_out = run_model(model, {"input": reference})
    int8_out = run_model(int8, {"input": reference})
    agree = float(np.mean(fp32_out.argmax(1) == int8_out.argmax(1)))
    # measured with --per-channel: agreement 0.969 (31/32), median logit cosine 0.998
    assert agree >= 0.875
    assert float(np.median(cosines(fp32_out, int8_out))) >= 0.99


def test_eval_takes_labels_from_class_folders(effnet_case, photo_folder, capsys):
    """Class folders 0/ and 1/ become integer labels, so eval reports accuracy (not only agreement)."""
    model = effnet_case[0]
    code = main(["eval", str(model), str(model), "--data", str(photo_folder), "--preprocess", PREPROCESS,
                 "--no-latency", "--no-progress", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["samples"] == 32
    assert result["fp32_top1"] is not None and result["fp32_top1"] == result["int8_top1"]
