"""Caffe Data layer: LMDB source, transform_param in Caffe's fixed order, transform_op in listed order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb", reason="the Data layer reads an LMDB")
from PIL import Image  # noqa: E402

from int8kit.data import LmdbWriter  # noqa: E402
from int8kit.data.caffe_data import caffe_data_source  # noqa: E402
from int8kit.data.samples import UNNAMED  # noqa: E402
from int8kit.errors import ConfigError  # noqa: E402

H, W = 36, 44


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Three real photos (scikit-image), RGB, resized small."""
    skdata = pytest.importorskip("skimage.data", reason="real photos come from scikit-image")
    return [np.asarray(Image.fromarray(getattr(skdata, n)()).resize((W, H), Image.BILINEAR)) for n in ("chelsea", "coffee", "astronaut")]


def _datum_lmdb(path: Path, photos: list[np.ndarray]) -> list[np.ndarray]:
    """A convert_imageset-style LMDB: uint8 CHW BGR datums with labels 0, 1, 2."""
    from int8kit.importers.caffe.proto import Datum

    chws = [np.ascontiguousarray(p[:, :, ::-1].transpose(2, 0, 1)) for p in photos]
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, chw in enumerate(chws):
            d = Datum(channels=3, height=H, width=W, data=chw.tobytes(), label=i)
            txn.put(f"{i:08d}_photo{i}.jpg".encode(), d.SerializeToString())
    env.close()
    return chws


def _prototxt(path: Path, transform: str, source: str = "lmdb", extra: str = "") -> Path:
    path.write_text(f"""
name: "net"
layer {{
  name: "data" type: "Data" top: "data" top: "label"
  include {{ phase: TEST }}
  transform_param {{ {transform} }}
  data_param {{ source: "{source}" batch_size: 0 backend: LMDB }}
}}
{extra}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param {{ num_output: 4 kernel_size: 3 }} }}
""")
    return path


def _caffe_reference(datum: np.ndarray, *, scale=1.0, mean_values=None, mean=None, crop=None) -> np.ndarray:
    """Caffe's DataTransformer::Transform(Datum) at TEST, written index by index like the C++ loop."""
    c, h, w = datum.shape
    ch, cw = crop if crop else (h, w)
    h_off, w_off = ((h - ch) // 2, (w - cw) // 2) if crop else (0, 0)
    flat = datum.astype(np.float32).ravel()
    out = np.empty((c, ch, cw), np.float32)
    mean_flat = None if mean is None else mean.astype(np.float32).ravel()
    for ci in range(c):
        for hi in range(ch):
            data_index = (ci * h + h_off + hi) * w + w_off + np.arange(cw)
            x = flat[data_index]
            if mean_flat is not None:
                x = x - mean_flat[data_index]
            elif mean_values is not None:
                x = x - np.float32(mean_values[ci] if len(mean_values) > 1 else mean_values[0])
            out[ci, hi] = x * np.float32(scale)
    return out


def _read(proto: Path, **kw) -> tuple[list[np.ndarray], list]:
    src = caffe_data_source(proto, **kw)
    try:
        return [s.inputs[UNNAMED] for s in src], src.labels()
    finally:
        src.close()


def test_transform_param_mean_values_crop_scale(tmp_path, photos):
    chws = _datum_lmdb(tmp_path / "lmdb", photos)
    proto = _prototxt(tmp_path / "net.prototxt", "scale: 0.017 crop_size: 28 mean_value: 104 mean_value: 117 mean_value: 123")
    got, labels = _read(proto)
    assert labels == [0, 1, 2]
    for g, chw in zip(got, chws, strict=True):
        want = _caffe_reference(chw, scale=0.017, mean_values=[104, 117, 123], crop=(28, 28))
        assert g.dtype == np.float32 and g.shape == (3, 28, 28)
        np.testing.assert_array_equal(g, want)
        # the order matters: scaling before the mean would give another result
        assert not np.allclose(g, chw[:, 4:32, 8:36] * 0.017 - np.array([104, 117, 123])[:, None, None])


def test_transform_param_mean_file_is_taken_at_the_crop_place(tmp_path, photos):
    from int8kit.importers.caffe.proto import BlobProto

    chws = _datum_lmdb(tmp_path / "lmdb", photos)
    mean = np.stack(chws).astype(np.float32).mean(0) + np.linspace(0, 30, H * W).reshape(1, H, W)  # position-dependent
    blob = BlobProto(num=1, channels=3, height=H, width=W)
    blob.data.extend(mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    proto = _prototxt(tmp_path / "net.prototxt", 'mean_file: "mean.binaryproto" crop_h: 20 crop_w: 30 scale: 0.5 mirror: true')
    got, _ = _read(proto)
    for g, chw in zip(got, chws, strict=True):  # mirror is never applied (deterministic calibration)
        np.testing.assert_array_equal(g, _caffe_reference(chw, scale=0.5, mean=mean, crop=(20, 30)))


def test_single_mean_value_and_scale_only(tmp_path, photos):
    chws = _datum_lmdb(tmp_path / "lmdb", photos)
    got, _ = _read(_prototxt(tmp_path / "a.prototxt", "mean_value: 128 scale: 0.0078125"))
    np.testing.assert_array_equal(got[1], _caffe_reference(chws[1], scale=0.0078125, mean_values=[128]))
    got, _ = _read(_prototxt(tmp_path / "b.prototxt", ""))  # no preprocessing: the datum as stored
    assert got[2].dtype == np.uint8 and np.array_equal(got[2], chws[2])


def test_transform_op_runs_in_listed_order(tmp_path, photos):
    from int8kit.data.preprocess import parse_preprocess

    _datum_lmdb(tmp_path / "lmdb", photos)
    ops = """
    transform_op { op: RESIZE resize_h: 32 resize_w: 40 }
    transform_op { op: CROP crop_h: 24 crop_w: 24 }
    transform_op { op: STAND mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.0078125 }
    transform_op { op: BGR2RGB }
    """
    got, labels = _read(_prototxt(tmp_path / "net.prototxt", ops))
    ref = parse_preprocess("resize_h=32,resize_w=40;crop_h=24,crop_w=24;mean_value=104:117:123,scale=0.0078125;bgr2rgb")
    assert labels == [0, 1, 2]
    for g, photo in zip(got, photos, strict=True):
        np.testing.assert_array_equal(g, ref(photo))
    # listed order is honoured: cropping first then resizing gives other pixels
    swapped = ops.replace("RESIZE resize_h: 32 resize_w: 40", "TMP").replace("CROP crop_h: 24 crop_w: 24", "RESIZE resize_h: 24 resize_w: 24")
    swapped = swapped.replace("TMP", "CROP crop_h: 30 crop_w: 30")
    other, _ = _read(_prototxt(tmp_path / "swapped.prototxt", swapped))
    assert other[0].shape == got[0].shape and not np.array_equal(other[0], got[0])


def test_transform_op_and_param_are_mutually_exclusive(tmp_path, photos):
    _datum_lmdb(tmp_path / "lmdb", photos)
    proto = _prototxt(tmp_path / "net.prototxt", "scale: 0.5 transform_op { op: RESIZE resize_h: 8 resize_w: 8 }")
    with pytest.raises(ConfigError, match="mutually exclusive"):
        caffe_data_source(proto)


def test_phase_source_path_and_errors(tmp_path, photos):
    _datum_lmdb(tmp_path / "lmdb", photos)
    train = """layer { name: "train_data" type: "Data" top: "data" include { phase: TRAIN }
      data_param { source: "no_such_train_lmdb" backend: LMDB } }"""
    proto = _prototxt(tmp_path / "net.prototxt", "", extra=train)
    src = caffe_data_source(proto)  # TEST picks the TEST layer; its source is relative to the prototxt
    assert len(src) == 3 and "Data layer 'data'" in src.description
    src.close()
    elsewhere = tmp_path / "protos"
    elsewhere.mkdir()
    src = caffe_data_source(_prototxt(elsewhere / "net.prototxt", ""), root=tmp_path)
    assert len(src) == 3
    src.close()
    with pytest.raises(Exception, match="no_such_train_lmdb"):
        caffe_data_source(proto, phase="TRAIN")
    (tmp_path / "deploy.prototxt").write_text('layer { name: "c" type: "Convolution" bottom: "data" top: "c" }')
    with pytest.raises(ConfigError, match="no Data or AnnotatedData layer"):
        caffe_data_source(tmp_path / "deploy.prototxt")
    leveldb = _prototxt(tmp_path / "ldb.prototxt", "").read_text().replace("backend: LMDB", "backend: LEVELDB")
    (tmp_path / "ldb.prototxt").write_text(leveldb)
    with pytest.raises(ConfigError, match="LEVELDB"):
        caffe_data_source(tmp_path / "ldb.prototxt")


def test_data_layer_over_int8kit_lmdb_and_open_data(tmp_path):
    from int8kit.data.open import open_data

    batch = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    with LmdbWriter(tmp_path / "lmdb") as w:
        w.put(batch, labels=[4, 5])
    src = open_data(str(_prototxt(tmp_path / "net.prototxt", "")))
    got = [s.inputs[UNNAMED] for s in src]
    assert src.labels() == [4, 5] and np.array_equal(np.stack(got), batch)
    src.close()
    with pytest.raises(ConfigError, match="already preprocessed"):
        caffe_data_source(_prototxt(tmp_path / "scaled.prototxt", "scale: 2.0"))


def test_annotated_data_layer_reads_boxes(tmp_path, photos):
    from int8kit.data.annotated_datum import AnnotatedDatum
    from int8kit.importers.caffe.proto import Datum

    chw = np.ascontiguousarray(photos[0][:, :, ::-1].transpose(2, 0, 1))
    msg = AnnotatedDatum(type=0, datum=Datum(channels=3, height=H, width=W, data=chw.tobytes()))
    box = msg.annotation_group.add(group_label=2).annotation.add().bbox
    box.xmin, box.ymin, box.xmax, box.ymax = 0.25, 0.5, 0.75, 1.0
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"00000000", msg.SerializeToString())
    env.close()
    text = _prototxt(tmp_path / "ssd.prototxt", "mean_value: 104 mean_value: 117 mean_value: 123").read_text()
    (tmp_path / "ssd.prototxt").write_text(text.replace('type: "Data"', 'type: "AnnotatedData"'))
    got, labels = _read(tmp_path / "ssd.prototxt")
    np.testing.assert_array_equal(got[0], _caffe_reference(chw, mean_values=[104, 117, 123]))
    assert labels == [[(2, 0.25, 0.5, 0.75, 1.0)]]
