"""Streaming calibration: histograms against a NumPy reference, exact merging, the stats file, errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.calib.histogram import Histogram
from int8kit.calib.stats import FORMAT_VERSION, Stats, merge_histograms, model_fingerprint
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.errors import CalibrationError, ConfigError, DataError

BINS = 512
OPSET = [helper.make_opsetid("", 17)]


def _conv_model() -> onnx.ModelProto:
    """image -> Conv -> Relu -> Reshape -> MatMul -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((144, 5)).astype(np.float32), "M"),
        numpy_helper.from_array(np.array([-1, 144], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "W", "B"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Reshape", ["relu", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "M"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _two_input_model() -> onnx.ModelProto:
    """ids (int64) -> Cast ; feat -> Add(ids_f, feat) -> Sqrt(Abs) -> y."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["ids_f", "feat"], ["sum"]),
        helper.make_node("Shape", ["sum"], ["shp"]),
        helper.make_node("Sqrt", ["sum"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 6]),
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["n", 6]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6]), helper.make_tensor_value_info("shp", TensorProto.INT64, [2])]
    return helper.make_model(helper.make_graph(nodes, "two", inputs, outputs), opset_imports=OPSET)


def _images(n: int, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    # Growing scale across samples makes the histogram edge double during one pass.
    return x * (scale * np.linspace(0.1, 3.0, n, dtype=np.float32)[:, None, None, None])


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Every named tensor over all samples, from a separate plain onnxruntime run."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in feeds)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in m.graph.output], sess.run(None, feeds)))
    out.update({n: feeds[n] for n in names if n in feeds})
    return out


def _ref_hist(values: np.ndarray, bins: int) -> Histogram:
    """Independent float64 reference: edge = smallest power of two with -edge <= min and max < edge."""
    v = values.astype(np.float64).ravel()
    lo, hi = v.min(), v.max()
    edge = 2.0 ** np.ceil(np.log2(max(-lo, hi)))
    if hi >= edge:
        edge *= 2
    idx = np.floor(v * (bins / edge)).astype(np.int64) + bins
    return Histogram(np.bincount(idx, minlength=2 * bins), edge, float(lo), float(hi))


def test_histograms_and_ranges_match_numpy_reference() -> None:
    model = _conv_model()
    x = _images(50)
    stats = collect(model, x, bins=BINS, batch_size=8, progress=False)
    names = ["image", "conv", "relu", "flat", "y"]
    assert list(stats.tensors) == names
    assert stats.samples == 50 and stats.bins == BINS and stats.model_id == model_fingerprint(model)
    ref = _reference(model, {"image": x}, names)
    for name in names:
        got, want = stats[name].hist, _ref_hist(ref[name], BINS)
        assert got.edge == want.edge, name
        np.testing.assert_array_equal(got.counts, want.counts, err_msg=name)
        assert (got.min, got.max) == (want.min, want.max), name
        assert got.count == ref[name].size
    conv = ref["conv"]
    np.testing.assert_array_equal(stats["conv"].channel_min, conv.min(axis=(0, 2, 3)))
    np.testing.assert_array_equal(stats["conv"].channel_max, conv.max(axis=(0, 2, 3)))
    np.testing.assert_array_equal(stats["y"].channel_max, ref["y"].max(axis=0))  # rank 2: (N, C)
    # per-channel means (bias correction reads them)
    np.testing.assert_allclose(stats["conv"].channel_mean, conv.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["y"].channel_mean, ref["y"].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_per_channel_disabled_and_tensor_subset() -> None:
    model = _conv_model()
    stats = collect(model, _images(9), tensors=["relu", "image"], bins=BINS, per_channel_axis=None, progress=False)
    assert list(stats.tensors) == ["relu", "image"]
    assert stats["relu"].channel_min is None and stats["relu"].min == 0.0


def test_unknown_or_non_activation_tensor_is_config_error() -> None:
    model = _conv_model()
    with pytest.raises(ConfigError, match="tensor 'rleu' is not in the model.*relu"):
        collect(model, _images(4), tensors=["rleu"], progress=False)
    with pytest.raises(ConfigError, match="'W' is a weight"):
        collect(model, _images(4), tensors=["W"], progress=False)


@pytest.mark.parametrize("bins", [256, 1000, 8192])
def test_bins_must_be_power_of_two_in_range(bins: int) -> None:
    with pytest.raises(ConfigError, match="power of two between 512 and 4096"):
        collect(_conv_model(), _images(4), bins=bins, progress=False)


def test_merge_of_halves_is_bit_exact() -> None:
    model = _conv_model()
    a, b = _images(24, seed=2), _images(40, seed=3, scale=7.0)  # b has a 4-8x larger range
    whole = collect(model, np.concatenate([a, b]), bins=BINS, batch_size=16, progress=False)
    merged = collect(model, a, bins=BINS, batch_size=5, progress=False).merge(
        collect(model, b, bins=BINS, batch_size=7, progress=False)
    )
    assert merged.samples == whole.samples == 64
    for name, w in whole.tensors.items():
        m = merged[name]
        assert m.hist.edge == w.hist.edge
        np.testing.assert_array_equal(m.hist.counts, w.hist.counts, err_msg=name)
        assert (m.min, m.max) == (w.min, w.max)
        np.testing.assert_array_equal(m.channel_min, w.channel_min)
        if w.channel_sum is not None:
            np.testing.assert_allclose(m.channel_sum, w.channel_sum, rtol=1e-6)
        np.testing.assert_array_equal(m.channel_max, w.channel_max)


def test_merge_histograms_brings_edges_together() -> None:
    small = Histogram(np.bincount([600, 700, 1023], minlength=1024).astype(np.int64), 0.25, -0.1, 0.24)
    big = Histogram(np.zeros(1024, np.int64), 2.0, -1.0, 1.0)
    out = merge_histograms(small, big)
    assert out.edge == 2.0 and out.count == 3 and (out.min, out.max) == (-1.0, 1.0)
    # [-0.25, 0.25) lies in the central eighth of [-2, 2): bins 448..575.
    assert out.counts[448:576].sum() == 3


def test_merge_refuses_other_model_or_bins() -> None:
    s = collect(_conv_model(), _images(4), bins=BINS, progress=False)
    other = Stats(dict(s.tensors), 4, "0" * 40, BINS)
    with pytest.raises(CalibrationError, match="same model"):
        s.merge(other)
    with pytest.raises(CalibrationError, match="bins"):
        s.merge(Stats(dict(s.tensors), 4, s.model_id, 1024))


def test_save_load_round_trip_and_errors(tmp_path) -> None:
    model = _conv_model()
    stats = collect(model, _images(12), bins=BINS, progress=False)
    path = stats.save(tmp_path / "stats.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    back = Stats.load(path, model_id=model_fingerprint(model))
    assert list(back.tensors) == list(stats.tensors) and back.samples == 12 and back.bins == BINS
    for name, t in stats.tensors.items():
        np.testing.assert_array_equal(back[name].hist.counts, t.hist.counts)
        assert (back[name].hist.edge, back[name].min, back[name].max) == (t.hist.edge, t.min, t.max)
        np.testing.assert_array_equal(back[name].channel_max, t.channel_max)
    with pytest.raises(CalibrationError, match="another model.*re-run calibrate"):
        Stats.load(path, model_id=model_fingerprint(_two_input_model()))
    with np.load(path) as npz:
        data = dict(npz)
    data["version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "future.npz", **data)
    with pytest.raises(CalibrationError, match=f"format version {FORMAT_VERSION + 1}.*re-run calibrate"):
        Stats.load(tmp_path / "future.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    for bad in ("other.npz", "text.npz"):
        with pytest.raises(CalibrationError, match="not an int8kit statistics file"):
            Stats.load(tmp_path / bad)
    with pytest.raises(CalibrationError, match="does not exist"):
        Stats.load(tmp_path / "missing.npz")


def test_fingerprint_stable_across_resave(tmp_path) -> None:
    model = _conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    assert model_fingerprint(onnx.load(tmp_path / "m.onnx")) == model_fingerprint(model)
    assert model_fingerprint(_two_input_model()) != model_fingerprint(model)
    scaled = onnx.ModelProto()
    scaled.CopyFrom(model)
    w = scaled.graph.initializer[0]
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * 20, w.name))
    assert model_fingerprint(scaled) != model_fingerprint(model)  # same graph, other weights


def test_multi_input_model_with_int64_input() -> None:
    model = _two_input_model()
    rng = np.random.default_rng(4)
    feeds = {"ids": rng.integers(0, 50, (20, 6)), "feat": rng.random((20, 6)).astype(np.float32)}
    stats = collect(model, feeds, bins=BINS, batch_size=6, progress=False)
    assert list(stats.tensors) == ["feat", "ids_f", "sum", "y"]  # int input and Shape output skipped
    ref = _reference(model, feeds, list(stats.tensors))
    for name in stats.tensors:
        np.testing.assert_array_equal(stats[name].hist.counts, _ref_hist(ref[name], BINS).counts)


def test_nan_activation_names_tensor_and_batch() -> None:
    model = _two_input_model()
    feeds = {"ids": np.zeros((8, 6), np.int64), "feat": np.ones((8, 6), np.float32)}
    feeds["feat"][5, 0] = -3.0  # Sqrt of a negative sum gives NaN in batch 1 (batch size 4)
    with pytest.raises(CalibrationError, match="tensor 'y' has 1 NaN/Inf values in batch 1.*check the input data"):
        collect(model, feeds, bins=BINS, batch_size=4, progress=False)


def test_accepts_data_source_and_iterable() -> None:
    model = _conv_model()
    x = _images(10)
    src = batches_from(x, model_input_specs(model), batch_size=3)
    a = collect(model, src, bins=BINS, progress=False)
    b = collect(model, [{"image": x[:6]}, {"image": x[6:]}], bins=BINS, progress=False)
    np.testing.assert_array_equal(a["relu"].hist.counts, b["relu"].hist.counts)
    assert a.samples == b.samples == 10


def test_progress_bar_on_stderr(capsys) -> None:
    collect(_conv_model(), _images(6), bins=BINS, progress=True)
    assert "sample" in capsys.readouterr().err
    collect(_conv_model(), _images(6), bins=BINS, progress=False)
    assert capsys.readouterr().err == ""


def _peak_bytes(n: int) -> int:
    model = _conv_model()
    x = _images(n)
    data = ({"image": x[i : i + 16]} for i in range(0, n, 16))
    tracemalloc.start()
    try:
        collect(model, data, bins=BINS, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_samples() -> None:
    small, large = _peak_bytes(64), _peak_bytes(512)
    assert large <= small * 1.10, (small, large)


def test_capped_histogram_reads_a_fixed_subset_of_every_sample() -> None:
    """hist_per_sample: histograms exact over every stride-th value of each sample (each channel row);
    extremes, per-channel statistics and means still over all values; halves still merge exactly."""
    model = _conv_model()
    x = _images(30)
    cap = 50  # conv/relu: 4x6x6 = 144 per sample -> stride 3 per 36-value channel row; image 192 -> stride 4
    stats = collect(model, x, bins=BINS, batch_size=8, progress=False, hist_per_sample=cap)
    ref = _reference(model, {"image": x}, ["image", "conv", "relu", "y"])
    for name in ("image", "conv", "relu"):
        v = ref[name]
        per = v[0].size
        stride = -(-per // cap)
        rows = v.reshape(-1, v.shape[2] * v.shape[3])[:, ::stride]
        want = _ref_hist(v, BINS)  # edge and extremes from all values
        got = stats[name]
        assert got.hist.edge == want.edge and (got.min, got.max) == (want.min, want.max), name
        sub_counts = np.bincount(
            np.floor(rows.astype(np.float64).ravel() * (BINS / want.edge)).astype(np.int64) + BINS, minlength=2 * BINS
        )
        np.testing.assert_array_equal(got.hist.counts, sub_counts, err_msg=name)
        np.testing.assert_array_equal(got.channel_max, v.max(axis=(0, 2, 3)))
        np.testing.assert_allclose(got.channel_mean, v.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats["y"].hist.counts, _ref_hist(ref["y"], BINS).counts)  # 5 per sample: all
    whole = collect(model, x, bins=BINS, batch_size=16, progress=False, hist_per_sample=cap)
    merged = collect(model, x[:11], bins=BINS, batch_size=5, progress=False, hist_per_sample=cap).merge(
        collect(model, x[11:], bins=BINS, batch_size=7, progress=False, hist_per_sample=cap)
    )
    for name, w in whole.tensors.items():
        assert merged[name].hist.edge == w.hist.edge
        np.testing.assert_array_equal(merged[name].hist.counts, w.hist.counts, err_msg=name)
        np.testing.assert_array_equal(merged[name].hist.counts, stats[name].hist.counts, err_msg=name)
    with pytest.raises(ConfigError, match="hist_per_sample"):
        collect(model, x, bins=BINS, progress=False, hist_per_sample=0)


def test_capped_histogram_without_channels_strides_each_sample() -> None:
    model = _conv_model()
    x = _images(12)
    stats = collect(model, x, tensors=["relu"], bins=BINS, batch_size=5, progress=False, hist_per_sample=40, per_channel_axis=None)
    v = _reference(model, {"image": x}, ["relu"])["relu"]
    want = _ref_hist(v, BINS)
    sub = v.reshape(12, -1)[:, ::4].astype(np.float64).ravel()  # 144 per sample, cap 40 -> stride 4
    counts = np.bincount(np.floor(sub * (BINS / want.edge)).astype(np.int64) + BINS, minlength=2 * BINS)
    np.testing.assert_array_equal(stats["relu"].hist.counts, counts)
    assert stats["relu"].hist.edge == want.edge and stats["relu"].max == want.max


def _wide_conv_model(c: int = 4, hw: int = 48) -> onnx.ModelProto:
    """image (n, 3, hw, hw) -> Conv (c channels) -> Relu -> ReduceMean over H -> y (n, c, hw): a big
    feature map (c*hw*hw values a sample) and a rank-3 tensor after it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "W")]
    nodes = [
        helper.make_node("Conv", ["image", "W"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("ReduceMean", ["relu"], ["y"], axes=[2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c, hw])], inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def test_workers_merge_to_the_one_worker_statistics(monkeypatch) -> None:
    """Pieces spread over several workers whose states merge at the end: the same statistics as one worker."""
    import int8kit.calib.collect as collect_mod

    model = _conv_model()
    x = _images(40, scale=5.0)  # growing range: the workers' histogram edges differ before merging
    monkeypatch.setattr(collect_mod, "_workers", lambda: 1)
    one = collect(model, x, bins=BINS, batch_size=6, progress=False, hist_per_sample=50)
    monkeypatch.setattr(collect_mod, "_workers", lambda: 3)
    three = collect(model, x, bins=BINS, batch_size=6, progress=False, hist_per_sample=50)
    assert three.samples == one.samples == 40
    for name, a in one.tensors.items():
        b = three[name]
        assert b.hist.edge == a.hist.edge and (b.min, b.max) == (a.min, a.max) and b.values == a.values, name
        np.testing.assert_array_equal(b.hist.counts, a.hist.counts, err_msg=name)
        if a.channel_min is not None:
            np.testing.assert_array_equal(b.channel_min, a.channel_min)
            np.testing.assert_array_equal(b.channel_max, a.channel_max)
            np.testing.assert_allclose(b.channel_sum, a.channel_sum, rtol=1e-6)


def test_feature_maps_get_their_own_cap_and_are_reduced_in_graph() -> None:
    """A rank-4 map over map_hist_per_sample is histogrammed on a subset; the rank-3 tensor (>= 4096
    values a sample, histogrammed whole inside onnxruntime) keeps every value; extremes stay exact."""
    model = _wide_conv_model()  # relu: 4*48*48 = 9216 a sample, y: 4*48 = 192
    x = np.random.default_rng(3).standard_normal((6, 3, 48, 48)).astype(np.float32)
    stats = collect(model, x, bins=BINS, batch_size=4, progress=False, hist_per_sample=100_000, map_hist_per_sample=4096)
    ref = _reference(model, {"image": x}, ["conv", "relu", "y"])
    for name in ("conv", "relu"):  # stride ceil(9216 / 4096) = 3 over each 2304-value channel plane
        v = ref[name]
        want = _ref_hist(v, BINS)
        got = stats[name]
        assert got.hist.edge == want.edge and (got.min, got.max) == (want.min, want.max), name
        sub = v.reshape(-1, 48 * 48)[:, ::3].astype(np.float64).ravel()
        counts = np.bincount(np.floor(sub * (BINS / want.edge)).astype(np.int64) + BINS, minlength=2 * BINS)
        np.testing.assert_array_equal(got.hist.counts, counts, err_msg=name)
        assert got.values == v.size
        np.testing.assert_array_equal(got.channel_min, v.min(axis=(0, 2, 3)))
    y = ref["y"]
    np.testing.assert_array_equal(stats["y"].hist.counts, _ref_hist(y, BINS).counts)
    whole = collect(model, x, bins=BINS, batch_size=4, progress=False, hist_per_sample=100_000, map_hist_per_sample=None)
    for name in ("conv", "relu"):  # no map cap: 9216 values a sample, at least 4096, reduced in-graph whole
        np.testing.assert_array_equal(whole[name].hist.counts, _ref_hist(ref[name], BINS).counts, err_msg=name)
        np.testing.assert_allclose(whole[name].channel_mean, ref[name].astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [12, 17])  # 12: ReduceSum takes its axes as an attribute
def test_dynamic_dims_are_sized_by_array_data_and_reduced_in_graph(monkeypatch, opset: int) -> None:
    """A model with dynamic H/W calibrated on arrays (one shape) is sized by the data, so its maps
    are reduced inside onnxruntime; a plain iterable (shapes may vary) is not. Same statistics."""
    import int8kit.calib.collect as collect_mod

    model = _wide_conv_model()
    model.opset_import[0].version = opset
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    reduced: list[str] = []
    real = collect_mod.add_reductions
    monkeypatch.setattr(collect_mod, "add_reductions", lambda m, name, *a: reduced.append(name) or real(m, name, *a))
    x = np.random.default_rng(5).standard_normal((6, 3, 48, 48)).astype(np.float32)
    kw = dict(bins=BINS, progress=False, hist_per_sample=100_000, map_hist_per_sample=None)
    in_graph = collect(model, x, batch_size=3, **kw)
    assert sorted(reduced) == ["conv", "relu"]
    assert in_graph.model_id == model_fingerprint(model)  # the given model's, not the sized copy's
    reduced.clear()
    in_numpy = collect(model, [{"image": x[:3]}, {"image": x[3:]}], **kw)
    assert reduced == []
    ref = _reference(model, {"image": x}, ["conv", "relu"])
    for name in ("conv", "relu"):
        a, b = in_graph[name], in_numpy[name]
        np.testing.assert_array_equal(a.hist.counts, _ref_hist(ref[name], BINS).counts, err_msg=name)
        np.testing.assert_array_equal(a.hist.counts, b.hist.counts, err_msg=name)
        assert (a.min, a.max, a.values) == (b.min, b.max, b.values), name
        np.testing.assert_array_equal(a.channel_max, b.channel_max)
        np.testing.assert_allclose(a.channel_mean, ref[name].astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_data_the_model_cannot_run_is_a_data_error_naming_batch_and_shapes() -> None:
    """A size the model cannot take (here: an Add with a fixed 4x4 constant) fails inside
    onnxruntime; calibration and evaluation say where and with which shapes, without a traceback."""
    from int8kit.evaluate.compare import compare_models

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])], "fixed_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((1, 3, 4, 4), np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    good = np.zeros((2, 3, 4, 4), np.float32)
    bad = np.zeros((2, 3, 5, 4), np.float32)
    collect(model, [{"x": good}], bins=BINS, progress=False)  # the right size runs
    with pytest.raises(DataError, match=r"calibration batch 1 with inputs 'x' \(2, 3, 5, 4\).*Add.*sizes and preprocessing"):
        collect(model, [{"x": good}, {"x": bad}], bins=BINS, progress=False)
    with pytest.raises(DataError, match=r"evaluation samples 0-1 \(FP32 model\) with inputs 'x' \(2, 3, 5, 4\)"):
        compare_models(model, model, bad, progress=False, latency=False)


def test_pinning_sizes_dynamic_dims_and_refuses_two_sizes_for_one_named_dim():
    from onnx import TensorProto, helper

    from int8kit.calib.taps import pin_sample_shapes
    from int8kit.errors import DataError

    ids = helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["N", "seq"])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "seq"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["ids", "mask"], ["y"])], "g", [ids, mask], [out]))
    pinned = pin_sample_shapes(model, {"ids": (16,), "mask": (16,)})
    assert [d.dim_value for d in pinned.graph.input[1].type.tensor_type.shape.dim] == [0, 16]
    assert model.graph.input[1].type.tensor_type.shape.dim[1].dim_param == "seq"  # the given model is untouched
    with pytest.raises(DataError, match="share dimension 'seq'"):
        pin_sample_shapes(model, {"ids": (16,), "mask": (12,)})


def test_fewer_bins_from_saved_statistics_equal_a_pass_with_fewer_bins() -> None:
    model, x = _conv_model(), _images(24, seed=5, scale=3.0)
    fine = collect(model, x, bins=2048, progress=False)
    coarse = collect(model, x, bins=512, progress=False)
    summed = fine.with_bins(512)
    assert summed.bins == 512 and fine.with_bins(2048) is fine
    for name, c in coarse.tensors.items():
        assert summed[name].hist.edge == c.hist.edge
        np.testing.assert_array_equal(summed[name].hist.counts, c.hist.counts, err_msg=name)
    with pytest.raises(CalibrationError, match="--th-binnum 4096 asks for finer histograms"):
        fine.with_bins(4096)


def test_an_iterable_with_fewer_samples_than_asked_is_an_error() -> None:
    model = _conv_model()
    batches = [{"image": _images(4, seed=i)} for i in range(3)]
    with pytest.raises(DataError, match="the data iterable has 12 samples but 16 iterations were asked"):
        collect(model, batches, iterations=16, bins=BINS, progress=False)
