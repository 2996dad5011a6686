"""ImageSource (folders, lists, skip/strict, labels, order, prefetch), open_data and the shape parser."""
from __future__ import annotations

import logging
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from int8kit.cli import main
from int8kit.data.images import ImageSource, decode_rgb
from int8kit.data.open import open_data
from int8kit.data.preprocess import Pipeline, parse_preprocess
from int8kit.importers.common import parse_input_shapes, parse_names
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.errors import ConfigError, DataError

Image = pytest.importorskip("PIL.Image")
PRE = "resize_h=8,resize_w=10;bgr2rgb"


def _save(path, seed: int, size=(12, 16), fmt=None):
    """A small random-colour image (distinct per seed) saved with Pillow."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def classes(tmp_path):
    """root/cat/{b,a}.png, root/dog/c.jpg, root/dog/sub/d.png: every image inside a class folder."""
    root = tmp_path / "imgs"
    files = [root / "dog" / "c.jpg", root / "cat" / "b.png", root / "cat" / "a.png", root / "dog" / "sub" / "d.png"]
    for i, f in enumerate(files):
        _save(f, i)
    return root


def _expected(paths, pre=PRE):
    pipe = parse_preprocess(pre)
    return [pipe(np.asarray(Image.open(p).convert("RGB"))) for p in paths]


@pytest.mark.parametrize("workers, executor", [(0, "thread"), (3, "thread"), (2, "process")])
def test_folder_order_values_and_class_labels(classes, workers, executor):
    src = ImageSource(classes, PRE, workers=workers, executor=executor)
    order = ["cat/a.png", "cat/b.png", "dog/c.jpg", "dog/sub/d.png"]
    assert [p.relative_to(classes).as_posix() for p in src.files] == order
    assert src.classes == ["cat", "dog"] and src.labels() == [0, 0, 1, 1]
    samples = list(src)
    for got, want in zip(samples, _expected(src.files)):
        np.testing.assert_array_equal(got.inputs[""], want)
    assert [s.label for s in samples] == [0, 0, 1, 1]
    assert len(list(src)) == 4  # re-iterable


def test_integer_class_folders_are_the_labels(tmp_path):
    for cls in ("2", "10", "7"):
        _save(tmp_path / cls / "x.png", int(cls))
    assert ImageSource(tmp_path, PRE).labels() == [10, 2, 7]  # sorted paths: 10/, 2/, 7/


def test_images_at_the_root_mean_no_labels(classes):
    _save(classes / "top.png", 9)
    src = ImageSource(classes, PRE)
    assert src.labels() is None and len(src) == 5


def test_non_images_skipped_with_one_warning_or_strict_error(classes, caplog):
    (classes / "notes.txt").write_text("not an image")
    (classes / "cat" / "broken.jpg").write_bytes(b"\x00garbage")
    (classes / ".hidden.png").write_bytes(b"ignored: hidden")
    with caplog.at_level(logging.WARNING):
        src = ImageSource(classes, PRE)
    assert len(src) == 4 and len(src.skipped) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 of 6 files" in warnings[0].getMessage()
    with pytest.raises(DataError, match="broken.jpg' is not a readable image.*2 such file"):
        ImageSource(classes, PRE, strict=True)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="holds no images; expected"):
        ImageSource(tmp_path, PRE)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"holds no images \(1 files are not readable"):
        ImageSource(tmp_path, PRE)
    with pytest.raises(DataError, match="does not exist"):
        ImageSource(tmp_path / "nope", PRE)


def test_list_file_relative_absolute_labels_and_comments(classes, tmp_path):
    absolute = _save(tmp_path / "elsewhere" / "e.png", 5)
    lst = classes / "ImageList.txt"
    lst.write_text(f"# calibration list\ndog/c.jpg 3\n\ncat/a.png 1\n{absolute} 0\nmissing.png 2\n")
    src = ImageSource(lst, PRE, workers=2)
    assert [p.name for p in src.files] == ["c.jpg", "a.png", "e.png"]  # list order, missing file skipped
    assert src.labels() == [3, 1, 0] and src.description == f"image list '{lst}'"
    for got, want in zip(src, _expected(src.files)):
        np.testing.assert_array_equal(got.inputs[""], want)
    lst.write_text("dog/c.jpg\ncat/a.png\n")
    assert ImageSource(lst, PRE).labels() is None
    lst.write_text("dog/c.jpg 1\ncat/a.png\n")
    with pytest.raises(DataError, match="not on line 2"):
        ImageSource(lst, PRE)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 clockwise to view
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    up = decode_rgb(path)
    assert up.shape == (40, 20, 3)
    assert up[:15].mean() > 200 and up[25:].mean() < 50  # left half became the top


def test_truncated_image_fails_at_decode_naming_the_file(tmp_path):
    path = _save(tmp_path / "t.jpg", 0, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    src = ImageSource(tmp_path, PRE, workers=1)
    assert len(src) == 1  # the header still reads
    with pytest.raises(DataError, match="t.jpg' passed the header check but failed"):
        list(src)


def test_prefetch_is_bounded_and_early_stop_shuts_down(classes):
    for i in range(30):
        _save(classes / "cat" / f"z{i:02d}.png", 100 + i)
    calls, lock = [0], threading.Lock()

    class Counting(Pipeline):
        def __call__(self, image):
            with lock:
                calls[0] += 1
            return super().__call__(image)

    src = ImageSource(classes, Counting(parse_preprocess(PRE).ops), workers=2, prefetch=4)
    it = iter(src)
    next(it)
    assert calls[0] <= 4 + 1
    it.close()  # the consumer stops early: pending work is cancelled, nothing hangs
    assert calls[0] <= 6
    assert threading.active_count() < 20


def test_sample_batches_from_an_image_folder(classes):
    specs = model_input_specs(_model((None, 3, 8, 10)))
    batches = batches_from(ImageSource(classes, PRE, input_name="x"), specs, batch_size=3)
    shapes = [b["x"].shape for b in batches]
    assert shapes == [(3, 3, 8, 10), (1, 3, 8, 10)]
    assert batches.labels() == [0, 0, 1, 1]


def _model(shape):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_open_data_dispatch(classes, tmp_path):
    arr = np.zeros((2, 3), np.float32)
    assert open_data(arr) is arr
    np.save(tmp_path / "d.npy", arr)
    assert open_data(str(tmp_path / "d.npy")) == str(tmp_path / "d.npy")
    with pytest.raises(ConfigError, match="needs preprocessing.*--preprocess-template"):
        open_data(classes)
    with pytest.raises(ConfigError, match="already arrays"):
        open_data(arr, preprocess=PRE)
    with pytest.raises(ConfigError, match="drop --preprocess"):
        open_data(str(tmp_path / "d.npy"), preprocess=PRE)
    src = open_data(classes, preprocess_template="caffe_imagenet", input_shapes=[(None, 3, 224, 224)], input_names=["x"])
    assert isinstance(src, ImageSource) and src.pipeline.output_order == "BGR"
    assert next(iter(src)).inputs["x"].shape == (3, 224, 224)
    with pytest.raises(DataError, match=r"into shape \(3, 8, 10\) but input 'x' expects \(3, 224, 224\).*resize_h=224,resize_w=224"):
        open_data(classes, preprocess=PRE, input_shapes=[(None, 3, 224, 224)], input_names=["x"])
    with pytest.raises(DataError, match="the model takes channels last: add layout=NHWC"):
        open_data(classes, preprocess=PRE, input_shapes=[(1, 8, 10, 3)], input_names=["x"])


def test_shape_and_name_parsers_take_the_manuals_notation():
    assert parse_input_shapes("(1,3,224,224);(1,4)") == [(1, 3, 224, 224), (1, 4)]
    assert parse_names("(input);(mask)") == ["input", "mask"]
    with pytest.raises(ConfigError, match="not a shape"):
        parse_input_shapes("(1,x)")
    with pytest.raises(ConfigError, match="repeats"):
        parse_names("a;a")


def test_calibrate_cli_on_an_image_folder(classes, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(_model((None, 3, 8, 10)), model)
    out = tmp_path / "s.npz"
    code = main(["calibrate", str(model), "--data", str(classes), "--preprocess", PRE, "-o", str(out), "--no-progress"])
    assert code == 0 and out.exists()
    assert "on 4 samples" in capsys.readouterr().out
    assert main(["calibrate", str(model), "--data", str(classes), "--no-progress"]) == 2
    assert "needs preprocessing" in capsys.readouterr().err


def test_data_templates_verb(capsys):
    assert main(["data", "templates"]) == 0
    out = capsys.readouterr().out
    for name in ("vgg_tensorflow", "ssd_vgg_tensorflow", "ssd_inception_tensorflow"):
        assert name in out
    assert "crop_fraction=0.875" in out and "BGR" in out


def test_prefetch_window_covers_two_batches_within_the_memory_cap():
    from int8kit.data.images import PREFETCH_BYTES, PREFETCH_MAX, _window
    from int8kit.data.samples import Sample

    small = Sample({"": np.zeros((3, 224, 224), np.float32)})  # 588 KiB
    assert _window(small, workers=2) == PREFETCH_MAX == 64
    huge = Sample({"": np.zeros(PREFETCH_BYTES // 4 // 10, np.float32)})  # a tenth of the cap each
    assert _window(huge, workers=2) == 10
    assert _window(huge, workers=8) == 16  # never fewer than two per worker


def test_strict_flag_on_the_cli(classes, tmp_path, capsys):
    (classes / "cat" / "broken.jpg").write_bytes(b"\x00garbage")
    model = tmp_path / "m.onnx"
    onnx.save(_model((None, 3, 8, 10)), model)
    args = ["calibrate", str(model), "--data", str(classes), "--preprocess", PRE, "-o", str(tmp_path / "s.npz"), "--no-progress"]
    assert main(args + ["--strict"]) == 2
    assert "broken.jpg' is not a readable image" in capsys.readouterr().err
    assert main(args) == 0


def test_fixed_size_preprocessing_sizes_a_dynamic_model(classes, monkeypatch):
    """A resize to h x w gives every sample one shape: the batches say so, and calibration of a
    model with dynamic H/W reduces its tensors inside onnxruntime; a short-side resize does not."""
    import int8kit.calib.collect as collect_mod

    specs = model_input_specs(_model((None, 3, None, None)))
    assert batches_from(ImageSource(classes, PRE, input_name="x"), specs, batch_size=3).sample_shapes == {"x": (3, 8, 10)}
    assert ImageSource(classes, "resize_side=8", input_name="x").sample_shapes() is None
    assert batches_from(ImageSource(classes, "resize_side=8", input_name="x"), specs, batch_size=1).sample_shapes is None
    reduced: list[str] = []
    real = collect_mod.add_reductions
    monkeypatch.setattr(collect_mod, "add_reductions", lambda m, name, *a: reduced.append(name) or real(m, name, *a))
    big = "resize_h=48,resize_w=96;bgr2rgb"  # 13824 values a sample: over the in-graph floor
    stats = collect_mod.collect(_model((None, 3, None, None)), ImageSource(classes, big, input_name="x"), bins=512, progress=False)
    assert sorted(reduced) == ["x", "y"] and stats.samples == 4


def test_mixed_sizes_name_a_few_shapes_and_suggest_batches_of_one(tmp_path):
    """Five images of five sizes kept at their size: the error lists three shapes and the count,
    and suggests --batch 1 only when the model takes any size."""
    for i in range(5):
        _save(tmp_path / f"{i}.png", i, size=(10 + i, 12))
    pre = "mean_value=0,scale=1.0"
    with pytest.raises(DataError, match=r"\(3, 10, 12\), \(3, 11, 12\), \(3, 12, 12\) and 2 more.*--batch 1"):
        list(batches_from(ImageSource(tmp_path, pre, input_name="x"), model_input_specs(_model((None, 3, None, None))), batch_size=5))
    with pytest.raises(DataError, match=r"same size\.$"):
        list(batches_from(ImageSource(tmp_path, pre, input_name="x"), model_input_specs(_model((None, 3, 10, 12))), batch_size=5))


def test_a_16_bit_grey_png_keeps_its_pixels(tmp_path):
    from int8kit.data.images import decode_rgb

    grey = (np.arange(32 * 48) % 256).astype(np.uint16).reshape(32, 48)
    Image.fromarray(grey * 257).save(tmp_path / "g16.png")  # 16-bit PNG, mode I;16
    got = decode_rgb(tmp_path / "g16.png")
    assert got.shape == (32, 48, 3) and np.array_equal(got[..., 0], grey.astype(np.uint8))  # not clipped to white


@pytest.mark.parametrize("got, want, needle", [((3, 28, 28), (1, 28, 28), "add gray"), ((1, 224, 224), (3, 224, 224), "drop gray"),
                                               ((224, 224, 3), (3, 224, 224), "layout=NCHW"), ((3, 224, 224), (224, 224, 3), "add layout=NHWC")])
def test_shape_hints_name_the_fix(got, want, needle):
    from int8kit.data.open import _shape_hint

    assert needle in _shape_hint(got, want)


def test_a_crop_that_does_not_fit_names_the_image(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a_big.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "b_small.png")
    source = ImageSource(tmp_path, "crop_h=32,crop_w=32", workers=0)
    with pytest.raises(DataError, match="b_small.png.*crop 32x32 is larger"):
        list(source)
