"""LMDB datasets: int8kit records round-trip, data.label formats, refresh, Caffe Datum LMDBs, errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

lmdb = pytest.importorskip("lmdb", reason="the LMDB data source needs the lmdb package")
PIL = pytest.importorskip("PIL", reason="original images and encoded datums need Pillow")
from PIL import Image  # noqa: E402

from int8kit.data import LmdbWriter  # noqa: E402
from int8kit.data.lmdb_format import format_labels, label_lines, parse_labels  # noqa: E402
from int8kit.data.lmdb_source import LmdbSource, describe_lmdb  # noqa: E402
from int8kit.data.lmdb_store import refresh_lmdb  # noqa: E402
from int8kit.data.samples import UNNAMED  # noqa: E402
from int8kit.data.sources import InputSpec, batches_from  # noqa: E402
from int8kit.errors import ConfigError, DataError  # noqa: E402


def _samples(db) -> list:
    src = LmdbSource(db)
    try:
        return list(src), src.labels()
    finally:
        src.close()


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    skdata = pytest.importorskip("skimage.data", reason="real photos come from scikit-image")
    return np.asarray(Image.fromarray(skdata.chelsea()).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize(
    "dtype,shape",
    [(np.float32, (3, 2, 5, 7)), (np.float16, (2, 4)), (np.uint8, (4, 3, 6, 6)), (np.int64, (2, 16)), (np.bool_, (3, 5)), (np.float64, (1, 9))],
)
def test_records_round_trip_bit_exact(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=shape) * 100).astype(dtype) for _ in range(3)]
    if dtype == np.float32:  # the exact bits of special values survive too
        batches[0].flat[:3] = [np.finfo(np.float32).tiny, -0.0, np.finfo(np.float32).max]
    with LmdbWriter(tmp_path / "db") as w:
        for b in batches:
            w.put(b)
    samples, labels = _samples(tmp_path / "db")
    got = np.stack([s.inputs[UNNAMED] for s in samples])
    want = np.concatenate(batches)
    assert labels is None and got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_named_multi_input_records_and_batches(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 30000, (4, 16), dtype=np.int64)
    mask = np.ones((4, 16), np.int64)
    with LmdbWriter(tmp_path / "db") as w:
        w.put({"input_ids": ids[:2], "attention_mask": mask[:2]})
        w.put({"input_ids": ids[2:], "attention_mask": mask[2:]})
    specs = [InputSpec("input_ids", np.dtype(np.int64), (None, 16)), InputSpec("attention_mask", np.dtype(np.int64), (None, 16))]
    src = LmdbSource(tmp_path / "db")
    batches = list(batches_from(src, specs, batch_size=3))
    src.close()
    assert [b["input_ids"].shape[0] for b in batches] == [3, 1]
    np.testing.assert_array_equal(np.concatenate([b["input_ids"] for b in batches]), ids)
    # the scan checked one layout per input: calibration may size dynamic dims by it
    src = LmdbSource(tmp_path / "db")
    assert src.sample_shapes() == {"input_ids": (16,), "attention_mask": (16,)}
    assert batches_from(src, specs, batch_size=3).sample_shapes == {"input_ids": (16,), "attention_mask": (16,)}
    src.close()


def test_map_grows_and_keys_keep_order(tmp_path):
    big = np.arange(40_000, dtype=np.float32).reshape(4, 10_000)
    with LmdbWriter(tmp_path / "db", map_size=1 << 15) as w:  # 32 KiB: every put outgrows the map
        for i in range(12):
            w.put(big + i)
    samples, _ = _samples(tmp_path / "db")
    assert len(samples) == 48
    assert [float(s.inputs[UNNAMED][0]) for s in samples[::4]] == [float(i) for i in range(12)]


def test_failure_keeps_existing_db_and_leaves_no_staging(tmp_path):
    db = tmp_path / "db"
    with LmdbWriter(db) as w:
        w.put(np.zeros((2, 3), np.float32), labels=[1, 2])
    before = {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()}
    with pytest.raises(RuntimeError):
        with LmdbWriter(db, overwrite=True) as w:
            w.put(np.ones((2, 3), np.float32), labels=[5, 6])
            raise RuntimeError("training loop crashed")
    assert {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    with pytest.raises(DataError, match="already exists"):
        LmdbWriter(db)
    with LmdbWriter(db, overwrite=True) as w:  # a finished overwrite replaces it
        w.put(np.ones((1, 3), np.float32), labels=[9])
    samples, labels = _samples(db)
    assert len(samples) == 1 and labels == [9]


def test_put_errors(tmp_path):
    w = LmdbWriter(tmp_path / "db")
    with pytest.raises(DataError, match="different batch sizes"):
        w.put({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
    with pytest.raises(DataError, match="dtype object"):
        w.put(np.array([[None]], dtype=object))
    with pytest.raises(DataError, match="2 entries"):
        w.put(np.zeros((2, 3)), labels=[1, 2, 3])
    with pytest.raises(DataError, match="uint8"):
        w.put(np.zeros((1, 3)), originals=np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(DataError, match="transpose"):
        w.put(np.zeros((1, 3)), originals=np.zeros((1, 3, 8, 8), np.uint8))
    w.put(np.zeros((2, 3)), labels=[1, 2])
    with pytest.raises(DataError, match="every put"):
        w.put(np.zeros((2, 3)))
    w.abort()
    assert not (tmp_path / "db").exists()
    with pytest.raises(DataError, match="no records"):
        LmdbWriter(tmp_path / "empty").close()


def test_label_lines_and_parse():
    assert label_lines([3, 13, 4, 6], 4) == ("class", ["3,13,4,6"])
    assert label_lines("[3, 13, 4, 6]", 4) == ("class", ["3,13,4,6"])  # the manual's json.dumps(labels)
    assert label_lines(np.array([1, 2]), 2) == ("class", ["1,2"])
    boxes = [[(4, 258, 98, 505, 234), (17, 1, 137, 97, 502.5)], []]
    kind, lines = label_lines(boxes, 2)
    assert kind == "detect" and lines == ["4,258,98,505,234;17,1,137,97,502.5", ""]
    # classification: one line per record; detection: one line per sample
    assert parse_labels("3,13,4,6\n1,2\n", [4, 2], where="t") == ("class", [3, 13, 4, 6, 1, 2])
    kind, parsed = parse_labels("4,258,98,505,234;17,1,137,97,502\n\n18,225,117,309,240\n", [2, 1], where="t")
    assert kind == "detect" and parsed == [[(4, 258, 98, 505, 234), (17, 1, 137, 97, 502)], [], [(18, 225, 117, 309, 240)]]
    assert format_labels("detect", parsed, [2, 1]) == "4,258,98,505,234;17,1,137,97,502\n\n18,225,117,309,240\n"
    assert format_labels("class", [3, 13, 4, 6, 1, 2], [4, 2]) == "3,13,4,6\n1,2\n"
    with pytest.raises(DataError, match="3 lines"):
        parse_labels("1\n2\n3\n", [2], where="t")
    with pytest.raises(DataError, match="cls,x1,y1,x2,y2"):
        parse_labels("1,2,3\n", [1], where="t")


def test_detection_labels_written_per_sample(tmp_path):
    with LmdbWriter(tmp_path / "db") as w:
        w.put(np.zeros((2, 3), np.float32), labels=[[(1, 0, 0, 5, 5)], [(2, 1, 1, 4, 4), (3, 2, 2, 3, 3)]])
        w.put(np.zeros((1, 3), np.float32), labels=[[]])
    assert (tmp_path / "db" / "data.label").read_text() == "1,0,0,5,5\n2,1,1,4,4;3,2,2,3,3\n\n"
    _, labels = _samples(tmp_path / "db")
    assert labels == [[(1, 0, 0, 5, 5)], [(2, 1, 1, 4, 4), (3, 2, 2, 3, 3)], []]


def _db_with_originals(path: Path, kind: str) -> tuple[list[np.ndarray], list]:
    rng = np.random.default_rng(2)
    data, labels = [], []
    with LmdbWriter(path) as w:
        for r in range(4):
            batch = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)
            lab = [10 * r + i for i in range(3)] if kind == "class" else [[(10 * r + i, i, i, i + 5, i + 6)] for i in range(3)]
            w.put(batch, labels=lab, originals=rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8))
            data += list(batch)
            labels += lab
    return data, labels


@pytest.mark.parametrize("kind", ["class", "detect"])
def test_refresh_drops_exactly_the_deleted_samples(tmp_path, kind):
    db = tmp_path / "db"
    data, labels = _db_with_originals(db, kind)
    (db / "notes.txt").write_text("kept beside the LMDB")
    deleted = {(1, 0), (1, 2), (2, 0), (2, 1), (2, 2), (3, 1)}  # record 2 loses every sample
    for rec, item in deleted:
        (db / "original_images" / f"{rec:010d}_{item}.jpg").unlink()
    held = LmdbSource(db)  # a reader still open on the old LMDB must not hide the new one
    res = refresh_lmdb(db)
    keep = [r * 3 + i for r in range(4) for i in range(3) if (r, i) not in deleted]
    assert (res.kept, res.dropped, res.records) == (len(keep), 6, 3)
    samples, got_labels = _samples(db)
    for s, k in zip(samples, keep, strict=True):
        assert s.inputs[UNNAMED].tobytes() == data[k].tobytes()
    assert got_labels == [labels[k] for k in keep]
    names = sorted(p.name for p in (db / "original_images").iterdir())
    assert names == sorted(["0000000000_0.jpg", "0000000000_1.jpg", "0000000000_2.jpg", "0000000001_0.jpg",
                            "0000000002_0.jpg", "0000000002_1.jpg"])
    assert (db / "notes.txt").read_text() == "kept beside the LMDB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    assert refresh_lmdb(db).dropped == 0  # a second refresh finds nothing more
    assert len(held) == 12
    held.close()


def test_refresh_errors_leave_db_untouched(tmp_path):
    db = tmp_path / "db"
    with LmdbWriter(db) as w:
        w.put(np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="original_images"):
        refresh_lmdb(db)
    db2 = tmp_path / "db2"
    _db_with_originals(db2, "class")
    for p in (db2 / "original_images").iterdir():
        p.unlink()
    before = (db2 / "data.mdb").read_bytes()
    with pytest.raises(DataError, match="every original image"):
        refresh_lmdb(db2)
    assert (db2 / "data.mdb").read_bytes() == before


# ------------------------------------------------------------- Caffe Datum LMDBs


def _caffe_lmdb(path: Path, datums: list) -> None:
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, d in enumerate(datums):
            txn.put(f"{i:08d}_img{i}.jpg".encode(), d.SerializeToString())  # convert_imageset's key form
    env.close()


def _datum(**kw):
    from int8kit.importers.caffe.proto import Datum

    return Datum(**kw)


def test_caffe_uint8_float_and_encoded_datums(tmp_path):
    photo = _photo(24, 32)  # RGB
    bgr_chw = np.ascontiguousarray(photo[:, :, ::-1].transpose(2, 0, 1))
    png, jpg = io.BytesIO(), io.BytesIO()
    Image.fromarray(photo).save(png, format="PNG")
    Image.fromarray(photo).save(jpg, format="JPEG", quality=90)
    floats = np.random.default_rng(3).normal(size=(2, 5, 6)).astype(np.float32)
    _caffe_lmdb(tmp_path / "db", [
        _datum(channels=3, height=24, width=32, data=bgr_chw.tobytes(), label=7),
        _datum(channels=2, height=5, width=6, float_data=floats.ravel().tolist(), label=3),
        _datum(channels=3, height=24, width=32, data=png.getvalue(), encoded=True, label=1),
        _datum(channels=3, height=24, width=32, data=jpg.getvalue(), encoded=True, label=2),
    ])
    src = LmdbSource(tmp_path / "db")
    assert src.kind == "caffe-datum" and len(src) == 4 and src.labels() == [7, 3, 1, 2]
    s = list(src)
    src.close()
    assert s[0].inputs[UNNAMED].dtype == np.uint8 and np.array_equal(s[0].inputs[UNNAMED], bgr_chw)
    assert s[1].inputs[UNNAMED].dtype == np.float32 and np.array_equal(s[1].inputs[UNNAMED], floats)
    assert np.array_equal(s[2].inputs[UNNAMED], bgr_chw)  # PNG is lossless: the exact BGR pixels
    want_jpg = np.asarray(Image.open(io.BytesIO(jpg.getvalue())).convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)
    assert np.array_equal(s[3].inputs[UNNAMED], want_jpg)
    assert [x.label for x in s] == [7, 3, 1, 2]


def test_caffe_datum_with_pipeline_sees_rgb(tmp_path):
    from int8kit.data.preprocess import parse_preprocess

    photo = _photo(30, 40)
    bgr_chw = np.ascontiguousarray(photo[:, :, ::-1].transpose(2, 0, 1))
    _caffe_lmdb(tmp_path / "db", [_datum(channels=3, height=30, width=40, data=bgr_chw.tobytes(), label=0)])
    text = "resize_h=20,resize_w=24;crop_h=16,crop_w=16;mean_value=104:117:123,scale=0.017"
    src = LmdbSource(tmp_path / "db", pipeline=parse_preprocess(text))
    got = next(iter(src)).inputs[UNNAMED]
    src.close()
    np.testing.assert_array_equal(got, parse_preprocess(text)(photo))


def test_caffe_datum_sample_shapes_only_when_fixed(tmp_path):
    from int8kit.data.preprocess import parse_preprocess

    gray = (np.arange(30 * 40) % 251).astype(np.uint8).reshape(1, 30, 40)
    _caffe_lmdb(tmp_path / "db", [_datum(channels=1, height=30, width=40, data=gray.tobytes(), label=0)])
    fixed = LmdbSource(tmp_path / "db", pipeline=parse_preprocess("resize_h=20,resize_w=24;crop_h=16,crop_w=16"))
    got = next(iter(fixed)).inputs[UNNAMED].shape
    assert fixed.sample_shapes() == {UNNAMED: got} and got[0] == 1  # probed with the datum's one channel
    by_size = LmdbSource(tmp_path / "db", pipeline=parse_preprocess("resize_side=8"))
    raw = LmdbSource(tmp_path / "db")
    assert by_size.sample_shapes() is None and raw.sample_shapes() is None
    for src in (fixed, by_size, raw):
        src.close()


def test_lmdb_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LmdbSource(tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no data.mdb"):
        LmdbSource(tmp_path / "folder")
    lmdb.open(str(tmp_path / "empty")).close()
    with pytest.raises(DataError, match="holds no records"):
        LmdbSource(tmp_path / "empty")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "data.mdb").write_bytes(b"not an lmdb" * 100)
    with pytest.raises(DataError, match="cannot be opened"):
        LmdbSource(tmp_path / "corrupt")
    with LmdbWriter(tmp_path / "mixed") as w:
        w.put(np.zeros((2, 3, 8, 8), np.float32))
        w.put(np.zeros((2, 3, 9, 9), np.float32))
    with pytest.raises(DataError, match="record 0000000001.*same layout"):
        LmdbSource(tmp_path / "mixed")
    _caffe_lmdb(tmp_path / "junk", [])
    env = lmdb.open(str(tmp_path / "junk"))
    with env.begin(write=True) as txn:
        txn.put(b"00000000", b"\xff\xff\xff garbage")
    env.close()
    with pytest.raises(DataError, match="neither an int8kit record nor a Caffe Datum"):
        list(LmdbSource(tmp_path / "junk"))
    with LmdbWriter(tmp_path / "ok") as w:
        w.put(np.zeros((1, 3), np.float32))
    with pytest.raises(ConfigError, match="already preprocessed"):
        LmdbSource(tmp_path / "ok", transform=lambda a: a)
    src = LmdbSource(tmp_path / "ok")  # the failed opens released the shared environment
    assert len(src) == 1
    src.close()


def test_describe(tmp_path):
    with LmdbWriter(tmp_path / "db") as w:
        w.put(np.array([[0.5, -2.0]], np.float32), labels=[4], originals=np.zeros((1, 4, 4, 3), np.uint8))
        w.put(np.array([[1.5, 3.0]], np.float32), labels=[5], originals=np.zeros((1, 4, 4, 3), np.uint8))
    info = describe_lmdb(tmp_path / "db")
    assert (info.kind, info.records, info.samples, info.originals) == ("int8kit", 2, 2, 2)
    a = info.arrays["data"]
    assert (a["shapes"], a["dtype"], a["min"], a["max"]) == ({(2,)}, np.float32, -2.0, 3.0)
    assert info.labels == "class (data.label)"
    assert os.path.isfile(tmp_path / "db" / "original_images" / "0000000001_0.jpg")


def test_ssd_annotated_datums_give_images_and_boxes(tmp_path):
    from int8kit.data.annotated_datum import AnnotatedDatum

    photo = _photo(24, 32)
    bgr_chw = np.ascontiguousarray(photo[:, :, ::-1].transpose(2, 0, 1))
    records = []
    for i, boxes in enumerate([[(3, 0.1, 0.2, 0.5, 0.6)], [(1, 0.0, 0.0, 1.0, 1.0), (7, 0.25, 0.25, 0.75, 0.5)], []]):
        msg = AnnotatedDatum(type=0)
        msg.datum.CopyFrom(_datum(channels=3, height=24, width=32, data=(bgr_chw + i).tobytes()))
        for cls, *xyxy in boxes:
            group = msg.annotation_group.add(group_label=cls)
            a = group.annotation.add(instance_id=0)
            a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax = xyxy
        records.append(msg)
    _caffe_lmdb(tmp_path / "db", records)
    src = LmdbSource(tmp_path / "db")
    assert src.kind == "caffe-annotated-datum" and src.label_kind == "detect"
    samples = list(src)
    labels = src.labels()
    src.close()
    assert [np.array_equal(s.inputs[UNNAMED], bgr_chw + i) for i, s in enumerate(samples)] == [True] * 3
    assert labels == [s.label for s in samples]
    assert labels[0] == [(3, pytest.approx(0.1), pytest.approx(0.2), 0.5, pytest.approx(0.6))]
    assert [len(x) for x in labels] == [1, 2, 0] and labels[1][1][0] == 7
    assert describe_lmdb(tmp_path / "db").labels == "detect (AnnotatedDatum boxes)"
