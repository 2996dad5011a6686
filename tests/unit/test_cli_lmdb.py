"""``int8kit lmdb create|info|refresh`` through ``int8kit.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lmdb", reason="the LMDB commands need the lmdb package")
from PIL import Image  # noqa: E402

from int8kit.cli import main  # noqa: E402
from int8kit.data.lmdb_source import LmdbSource  # noqa: E402
from int8kit.data.samples import UNNAMED  # noqa: E402

PRE = "resize_side=40;crop_h=32,crop_w=32;mean_value=104:117:123,scale=0.017;bgr2rgb"


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    """Five real photos (scikit-image) as JPEG files in class folders 0/ and 1/, plus a non-image."""
    skdata = pytest.importorskip("skimage.data", reason="real photos come from scikit-image")
    root = tmp_path / "photos"
    for i, name in enumerate(("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry")):
        folder = root / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(getattr(skdata, name)()[..., :3])
        img.thumbnail((96, 96))
        img.save(folder / f"{name}.jpg", quality=92)
    (root / "1" / "notes.txt").write_text("not an image")
    return root


def test_create_matches_image_source_and_info_refresh(tmp_path, photo_folder, capsys):
    from int8kit.data.images import ImageSource

    db = tmp_path / "calib_lmdb"
    rc = main(["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE, "--shape", "2,3,32,32",
               "-o", str(db), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "wrote 5 samples in 3 records" in out and "1 unreadable" in out
    images = ImageSource(photo_folder, PRE, workers=0)
    want = [s.inputs[UNNAMED] for s in images]
    src = LmdbSource(db)
    got = [s.inputs[UNNAMED] for s in src]
    assert src.labels() == images.labels() == [0, 0, 0, 1, 1]
    src.close()
    assert len(got) == 5 and all(g.tobytes() == w.tobytes() for g, w in zip(got, want))
    assert len(list((db / "original_images").glob("*.jpg"))) == 5
    assert (db / "data.label").read_text() == "0,0\n0,1\n1\n"

    assert main(["lmdb", "info", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["records"], info["samples"], info["original_images"]) == ("int8kit", 3, 5, 5)
    assert info["inputs"]["data"]["shape"] == [[3, 32, 32]] and info["inputs"]["data"]["dtype"] == "float32"
    assert info["inputs"]["data"]["min"] == pytest.approx(float(np.min(want)))
    assert main(["lmdb", "info", str(db)]) == 0
    assert "class (data.label)" in capsys.readouterr().out

    (db / "original_images" / "0000000001_0.jpg").unlink()  # the third photo is a bad one
    assert main(["lmdb", "refresh", str(db)]) == 0
    assert "kept 4 samples in 3 records, dropped 1" in capsys.readouterr().out
    src = LmdbSource(db)
    got = [s.inputs[UNNAMED] for s in src]
    assert src.labels() == [0, 0, 1, 1] and all(g.tobytes() == w.tobytes() for g, w in zip(got, want[:2] + want[3:]))
    src.close()


def test_create_errors(tmp_path, photo_folder, capsys):
    db = tmp_path / "db"
    assert main(["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE, "--shape", "1,3,224,224", "-o", str(db)]) == 2
    assert "--shape asks (3, 224, 224)" in capsys.readouterr().err
    assert not db.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    assert main(["lmdb", "create", "--images", str(photo_folder), "--shape", "1,3,32,32", "-o", str(db)]) == 2
    assert "--preprocess" in capsys.readouterr().err
    assert main(["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE, "--shape", "1,x", "-o", str(db)]) == 2
    assert "--shape must be" in capsys.readouterr().err
    assert main(["lmdb", "refresh", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_overwrite_replaces_an_lmdb_only_and_never_the_images(tmp_path, photo_folder, capsys):
    def snapshot(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot(tmp_path)
    other = tmp_path / "work"
    (other / "pics").mkdir(parents=True)
    (other / "notes.txt").write_text("keep me")
    for target in (photo_folder, photo_folder / "lmdb", tmp_path, other, other / "notes.txt"):
        rc = main(["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE, "--shape", "1,3,32,32",
                   "-o", str(target), "--overwrite", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, target
        assert ("never touches its inputs" in err) or ("is not an LMDB folder" in err), err
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("work")} == before
    assert (other / "notes.txt").read_text() == "keep me" and (other / "pics").is_dir()
    assert not [p for p in tmp_path.rglob(".*")]  # no staging or .old folders left behind

    db = tmp_path / "db"  # an LMDB it made is replaced
    args = ["lmdb", "create", "--images", str(photo_folder), "--preprocess", PRE, "--shape", "1,3,32,32", "-o", str(db), "--no-progress"]
    assert main(args) == 0 and main(args) == 2 and main(args + ["--overwrite"]) == 0
    # ...unless an image list names files inside it
    inner = db / "original_images" / "0000000000_0.jpg"
    (tmp_path / "list.txt").write_text(f"{inner}\n")
    listed = ["lmdb", "create", "--images", str(tmp_path / "list.txt"), "--preprocess", PRE, "--shape", "1,3,32,32",
              "-o", str(db), "--overwrite", "--no-progress"]
    assert main(listed) == 2 and "lies inside the LMDB" in capsys.readouterr().err and inner.is_file()


def test_lmdb_with_labels_feeds_quantize_and_eval(tmp_path, capsys):
    """The bundled MNIST CNN quantized from an LMDB and evaluated on one whose data.label gives accuracy."""
    import onnxruntime as ort

    from int8kit.data import LmdbWriter

    from int8kit.demo_data import demo_model_path, load_demo_data

    data = load_demo_data()  # the model's own normalisation
    calib, test, labels = data["calib"][:32], data["test"][:100], data["test_labels"][:100]
    with LmdbWriter(tmp_path / "calib") as w:
        for i in range(0, 32, 16):
            w.put({"image": calib[i : i + 16]})
    with LmdbWriter(tmp_path / "test") as w:
        for i in range(0, 100, 50):
            w.put(test[i : i + 50], labels=labels[i : i + 50])
    model = str(demo_model_path())
    assert main(["quantize", model, "--data", str(tmp_path / "calib"), "-o", str(tmp_path / "out"), "--th-method", "max", "--no-progress"]) == 0
    capsys.readouterr()
    int8 = str(next((tmp_path / "out").glob("*_int8.onnx")))
    assert main(["eval", model, int8, "--data", str(tmp_path / "test"), "--json", "--no-latency", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    logits = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"image": test})[0]
    want = float(np.mean(logits.argmax(1) == labels))
    found = [v for k, v in _flatten(report) if "fp32" in k.lower() and "top1" in k.lower()]
    assert want > 0.9 and found and found[0] == pytest.approx(want), report


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}")
    else:
        yield prefix, obj
