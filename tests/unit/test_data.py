"""Data sources: model input specs, array/file/iterable sources and every validation error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from int8kit.data.sources import DataSource, InputSpec, batches_from, model_input_specs
from int8kit.errors import ConfigError, DataError


def _image_model(batch: int | None = None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch if batch else "n", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["y"])], "g", [x], [y], [w])
    graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]))  # initializer listed as input
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _text_model() -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 8])
    feat = helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT), helper.make_node("Add", ["idf", "feat"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", [ids, feat], [y]), opset_imports=[helper.make_opsetid("", 17)])


def _collect(source: DataSource) -> list[dict[str, np.ndarray]]:
    return list(source)


def test_specs_exclude_initializers_and_mark_dynamic_dims() -> None:
    specs = model_input_specs(_image_model())
    assert specs == [InputSpec("image", np.dtype(np.float32), (None, 1, 28, 28))]
    text = model_input_specs(_text_model())
    assert [(s.name, s.dtype, s.shape) for s in text] == [("ids", np.dtype(np.int64), (None, 8)), ("feat", np.dtype(np.float32), (None, 8))]


def test_array_batches_default_32_and_reiterable() -> None:
    specs = model_input_specs(_image_model())
    x = np.random.default_rng(0).standard_normal((70, 1, 28, 28)).astype(np.float32)
    src = batches_from(x, specs)
    assert src.num_samples == 70
    sizes = [b["image"].shape[0] for b in src]
    assert sizes == [32, 32, 6]
    again = np.concatenate([b["image"] for b in src])
    np.testing.assert_array_equal(again, x)


def test_large_samples_batch_by_bytes_unless_a_batch_size_is_asked(monkeypatch) -> None:
    """Without --batch, batches hold at most DEFAULT_BATCH_BYTES of input (the model's float32 size
    counts, not the file's uint8), one sample at least; an asked batch size is kept."""
    import int8kit.data.sources as sources

    monkeypatch.setattr(sources, "DEFAULT_BATCH_BYTES", 10 * 28 * 28 * 4)  # ten float32 images
    specs = model_input_specs(_image_model())
    x = np.zeros((25, 1, 28, 28), np.uint8)
    assert [b["image"].shape[0] for b in batches_from(x, specs)] == [10, 10, 5]
    assert [b["image"].shape[0] for b in batches_from(x, specs, batch_size=25)] == [25]
    monkeypatch.setattr(sources, "DEFAULT_BATCH_BYTES", 1)
    assert [b["image"].shape[0] for b in batches_from(x[:3], specs)] == [1, 1, 1]


def test_batch_size_and_iterations_cap() -> None:
    specs = model_input_specs(_image_model())
    x = np.zeros((50, 1, 28, 28), np.float32)
    src = batches_from(x, specs, batch_size=8, iterations=20)
    assert src.num_samples == 20
    assert [b["image"].shape[0] for b in src] == [8, 8, 4]


def test_fixed_batch_dim_wins() -> None:
    specs = model_input_specs(_image_model(batch=1))
    src = batches_from(np.zeros((5, 1, 28, 28), np.float32), specs, batch_size=16)
    assert [b["image"].shape for b in src] == [(1, 1, 28, 28)] * 5


def test_uint8_cast_to_float_and_int_inputs_pass_through() -> None:
    specs = model_input_specs(_image_model())
    src = batches_from(np.full((3, 1, 28, 28), 200, np.uint8), specs)
    batch = next(iter(src))
    assert batch["image"].dtype == np.float32 and batch["image"].max() == 200.0
    text = model_input_specs(_text_model())
    ids = np.arange(24, dtype=np.int64).reshape(3, 8)
    src = batches_from({"ids": ids, "feat": np.ones((3, 8), np.float32)}, text)
    batch = next(iter(src))
    assert batch["ids"].dtype == np.int64
    np.testing.assert_array_equal(batch["ids"], ids)


def test_npy_and_npz_files(tmp_path) -> None:
    specs = model_input_specs(_image_model())
    x = np.random.default_rng(1).standard_normal((10, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    got = np.concatenate([b["image"] for b in batches_from(tmp_path / "x.npy", specs, batch_size=4)])
    np.testing.assert_array_equal(got, x)
    text = model_input_specs(_text_model())
    np.savez(tmp_path / "d.npz", ids=np.zeros((6, 8), np.int64), feat=np.ones((6, 8), np.float32))
    src = batches_from(str(tmp_path / "d.npz"), text)
    assert src.num_samples == 6 and set(next(iter(src))) == {"ids", "feat"}


def test_file_errors(tmp_path) -> None:
    specs = model_input_specs(_image_model())
    with pytest.raises(DataError, match="does not exist"):
        batches_from(tmp_path / "missing.npy", specs)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"extension '\.csv'.*\.npy or \.npz"):
        batches_from(tmp_path / "x.csv", specs)
    np.save(tmp_path / "one.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(DataError, match="2 inputs.*npz"):
        batches_from(tmp_path / "one.npy", model_input_specs(_text_model()))


def test_npz_missing_extra_and_count_mismatch(tmp_path) -> None:
    text = model_input_specs(_text_model())
    np.savez(tmp_path / "a.npz", ids=np.zeros((4, 8), np.int64))
    with pytest.raises(DataError, match=r"no array for input\(s\) \['feat'\]; it holds \['ids'\]"):
        batches_from(tmp_path / "a.npz", text)
    np.savez(tmp_path / "b.npz", ids=np.zeros((4, 8), np.int64), feat=np.zeros((4, 8), np.float32), junk=np.zeros(3))
    with pytest.raises(DataError, match=r"\['junk'\] that are not model inputs"):
        batches_from(tmp_path / "b.npz", text)
    np.savez(tmp_path / "c.npz", ids=np.zeros((4, 8), np.int64), feat=np.zeros((5, 8), np.float32))
    with pytest.raises(DataError, match="different sample counts"):
        batches_from(tmp_path / "c.npz", text)


def test_shape_mismatch_names_input_and_shapes() -> None:
    specs = model_input_specs(_image_model())
    with pytest.raises(DataError, match=r"input 'image' expects samples of shape \(1, 28, 28\), got \(28, 28\)"):
        batches_from(np.zeros((4, 28, 28), np.float32), specs)


def test_dtype_errors() -> None:
    text = model_input_specs(_text_model())
    with pytest.raises(DataError, match="input 'ids' expects integer"):
        batches_from({"ids": np.zeros((2, 8), np.float32), "feat": np.zeros((2, 8), np.float32)}, text)


def test_too_few_samples_for_iterations() -> None:
    specs = model_input_specs(_image_model())
    with pytest.raises(DataError, match=r"has 10 samples but 100 iterations.*lower --iterations to 10"):
        batches_from(np.zeros((10, 1, 28, 28), np.float32), specs, iterations=100)


def test_nan_inf_counted() -> None:
    specs = model_input_specs(_image_model())
    x = np.zeros((4, 1, 28, 28), np.float32)
    x[0, 0, 0, :3] = np.nan
    x[2, 0, 5, 5] = np.inf
    with pytest.raises(DataError, match="input 'image' has 4 NaN/Inf values"):
        batches_from(x, specs)


def test_bad_options() -> None:
    specs = model_input_specs(_image_model())
    with pytest.raises(ConfigError):
        batches_from(np.zeros((4, 1, 28, 28), np.float32), specs, batch_size=0)
    with pytest.raises(ConfigError):
        batches_from(np.zeros((4, 1, 28, 28), np.float32), specs, iterations=-1)
    with pytest.raises(DataError, match="not supported"):
        batches_from(3.5, specs)


def test_iterable_passthrough_validated_and_capped() -> None:
    text = model_input_specs(_text_model())
    batches = [{"ids": np.full((4, 8), i, np.int32), "feat": np.ones((4, 8), np.float64)} for i in range(3)]
    src = batches_from(batches, text, iterations=10)
    got = list(src)
    assert [b["ids"].shape[0] for b in got] == [4, 4, 2]
    assert got[0]["ids"].dtype == np.int64 and got[0]["feat"].dtype == np.float32
    assert len(list(src)) == 3  # a list can be iterated again
    bad = iter([{"ids": np.zeros((2, 8), np.int64)}])
    with pytest.raises(DataError, match=r"batch 0 has keys \['ids'\].*add \['feat'\]"):
        list(batches_from(bad, text))
    nan = [{"ids": np.zeros((2, 8), np.int64), "feat": np.full((2, 8), np.nan, np.float32)}]
    with pytest.raises(DataError, match="input 'feat' has 16 NaN/Inf values in batch 0"):
        list(batches_from(nan, text))
    wrong = [{"ids": np.zeros((2, 9), np.int64), "feat": np.zeros((2, 8), np.float32)}]
    with pytest.raises(DataError, match=r"input 'ids' expects batches of shape \(\?, 8\), got \(2, 9\)"):
        list(batches_from(wrong, text))


def test_generator_consumed_once() -> None:
    specs = model_input_specs(_image_model())
    gen = ({"image": np.zeros((2, 1, 28, 28), np.float32)} for _ in range(2))
    src = batches_from(gen, specs)
    assert len(list(src)) == 2
    with pytest.raises(DataError, match="already consumed"):
        list(src)


def test_large_npz_and_npy_files_are_read_batch_by_batch(tmp_path):
    """Uncompressed .npz members and .npy files are read slice by slice: iterating a 32 MB file
    never allocates more than a few batches, and the batches equal the array."""
    import tracemalloc

    from int8kit.data.sources import InputSpec, batches_from

    data = np.random.default_rng(0).standard_normal((512, 4, 64, 64)).astype(np.float32)  # 32 MiB
    np.savez(tmp_path / "big.npz", x=data)
    np.save(tmp_path / "big.npy", data)
    spec = [InputSpec("x", np.dtype(np.float32), (None, 4, 64, 64))]
    for name in ("big.npz", "big.npy"):
        tracemalloc.start()
        seen = []
        for batch in batches_from(tmp_path / name, spec, batch_size=16):
            seen.append(float(batch["x"].sum()))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < data.nbytes / 4, f"{name}: peak {peak} bytes for a {data.nbytes}-byte file"
        np.testing.assert_allclose(seen, data.reshape(32, -1).sum(axis=1), rtol=1e-4)
    np.savez_compressed(tmp_path / "small.npz", x=data[:8])  # compressed: loaded whole, still works
    assert sum(len(b["x"]) for b in batches_from(tmp_path / "small.npz", spec, batch_size=4)) == 8


def test_iterations_is_an_error_past_the_data_unless_it_is_only_a_cap():
    from int8kit.data.sources import InputSpec, batches_from

    specs = [InputSpec("x", np.dtype(np.float32), (None, 4))]
    data = np.zeros((10, 4), np.float32)
    with pytest.raises(DataError, match="10 samples but 32 iterations"):
        batches_from(data, specs, iterations=32)
    capped = batches_from(data, specs, iterations=32, at_most=True)
    assert capped.num_samples == 10 and sum(len(b["x"]) for b in capped) == 10
