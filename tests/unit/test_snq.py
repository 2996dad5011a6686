"""SNQ (INT4 non-uniform weights), its deploy form and BN update, on tiny models built in code."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.cli import main
from int8kit.config import QuantConfig, TuneOptions
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.emit.int4_deploy import int4_deploy, snq_weights
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import ConfigError
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.tune.bn_update import update_bn
from int8kit.weights.arq import quantize_weight
from int8kit.weights.snq import LEVELS, cluster_codes, codebook

RNG = np.random.default_rng(0)
SNQ = {"weight_algo": "snq", "weight_bits": 4}


def _distinct_per_channel(q: np.ndarray, axis: int = 0) -> list[int]:
    rows = np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1)
    return [len(np.unique(r)) for r in rows]


@pytest.mark.parametrize("init", ["uniform", "gaussian", "d2sampling"])
def test_clustering_leaves_at_most_16_grid_codes_per_channel_each_the_nearest_level(init):
    w = (RNG.standard_normal((32, 16, 3, 3)) * RNG.uniform(0.1, 2, (32, 1, 1, 1))).astype(np.float32)
    q, _ = quantize_weight(w, axis=0)
    c = cluster_codes(q, 0, init=init)
    assert c.dtype == np.int8 and c.shape == q.shape and np.abs(c).max() <= 127
    counts = _distinct_per_channel(c)
    assert max(counts) == LEVELS and min(_distinct_per_channel(q)) > LEVELS
    for ch in range(32):  # every code went to the nearest of its channel's levels
        levels = np.unique(c[ch])
        nearest = levels[np.argmin(np.abs(q[ch].reshape(-1, 1).astype(int) - levels[None, :]), axis=1)]
        assert np.array_equal(np.abs(nearest - q[ch].reshape(-1)), np.abs(c[ch].reshape(-1).astype(int) - q[ch].reshape(-1)))
    # clustering error is small next to the codes' spread
    assert np.mean((c.astype(float) - q) ** 2) < 0.02 * np.mean(q.astype(float) ** 2)


def test_lloyd_on_the_histogram_is_k_means_on_every_weight():
    """Same start, same fixed point as scikit-learn's KMeans run on all weights one by one."""
    KMeans = pytest.importorskip("sklearn.cluster", reason="scikit-learn is the reference here").KMeans

    from int8kit.weights import snq

    q, _ = quantize_weight(RNG.standard_normal((1, 2000)).astype(np.float32), axis=0)
    counts = np.bincount(q[0].astype(int) + 127, minlength=255)[None, :].astype(float)
    start = snq._initial_centres(counts, "gaussian")
    ours = np.sort(snq._lloyd(counts, start.copy(), 1000, 1e-10)[0])
    km = KMeans(LEVELS, init=start.reshape(-1, 1), n_init=1, max_iter=1000, tol=0).fit(q[0].reshape(-1, 1).astype(float))
    np.testing.assert_allclose(ours, np.sort(km.cluster_centers_.ravel()), atol=1e-6)


def test_channels_with_few_codes_and_whole_tensors():
    q = np.array([[1, 2, 3, 3], [5, -5, 0, 0]], dtype=np.int8)
    assert np.array_equal(cluster_codes(q, 0), q)  # <= 16 distinct codes: unchanged
    wide = np.arange(-100, 100, dtype=np.int8).reshape(4, 50)
    assert len(np.unique(cluster_codes(wide, None))) <= LEVELS  # axis None: one codebook for all
    with pytest.raises(ConfigError, match="INT8 weight codes"):
        cluster_codes(q.astype(np.int16), 0)


def test_codebook_round_trip_and_refuses_unclustered_weights():
    q, _ = quantize_weight(RNG.standard_normal((8, 4, 3, 3)).astype(np.float32), axis=0)
    c = cluster_codes(q, 0)
    index, book = codebook(c, 0)
    assert index.max() < LEVELS and book.shape == (8, LEVELS)
    rebuilt = np.take_along_axis(book, index.reshape(8, -1).astype(int), axis=1).reshape(c.shape)
    assert np.array_equal(rebuilt, c)
    with pytest.raises(ConfigError, match="distinct weight codes"):
        codebook(q, 0)


@pytest.mark.parametrize(("options", "needle"), [
    ({"weight_algo": "snq"}, "--weight-bits 4"),
    ({"weight_algo": "arq", "weight_bits": 4}, "--weight-bits 8"),
    ({"weight_algo": "snk", "weight_bits": 4}, "did you mean 'snq'"),
    ({**SNQ, "snq_iterations": 499}, "500 to 2000"),
    ({**SNQ, "snq_min_distance": 1e-2}, "1e-10 to 1e-3"),
    ({**SNQ, "snq_init": "kmeans"}, "uniform, gaussian, d2sampling"),
])
def test_config_checks_the_manuals_pairs_and_ranges(options, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        QuantConfig(**options)


@pytest.mark.parametrize(("options", "needle"), [
    ({"bn_update_iterations": 1000}, "1 to 999"),
    ({"bn_moving_average_fraction": 1.0}, "between 0 and 1"),
])
def test_bn_update_options_are_checked(options, needle):
    with pytest.raises(ConfigError, match=needle):
        TuneOptions(**options)


def _chain(channels: int = 16, depth: int = 4, size: int = 8) -> onnx.ModelProto:
    """Conv-Relu repeated ``depth`` times, then a 1x1 conv; 3x3 convs with biases."""
    nodes, inits, x = [], [], "x"
    for k in range(depth):
        cin = 8 if k == 0 else channels  # 8 input channels: not a float RGB stem
        inits += [numpy_helper.from_array((RNG.standard_normal((channels, cin, 3, 3)) * (1.5 / np.sqrt(cin * 9))).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array((RNG.standard_normal(channels) * 0.1).astype(np.float32), f"b{k}")]
        nodes += [helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x = f"r{k}"
    inits += [numpy_helper.from_array((RNG.standard_normal((4, channels, 1, 1)) * 0.3).astype(np.float32), "wh"),
              numpy_helper.from_array(np.zeros(4, np.float32), "bh")]
    nodes.append(helper.make_node("Conv", [x, "wh", "bh"], ["y"], name="head"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, size, size])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.fixture(scope="module")
def chain():
    model = _chain()
    data = RNG.standard_normal((64, 8, 8, 8)).astype(np.float32)
    return model, collect(model, data, tensors=candidate_tensors(model), progress=False), data


def _run(model: onnx.ModelProto, x: np.ndarray, optimized: str | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    if optimized:
        opts.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_snq_spares_the_first_and_last_layers_and_overrides_decide_per_layer(chain):
    model, stats, _ = chain
    methods = lambda p: {k: v.method for k, v in p.tensors.items() if v.kind == "weight"}  # noqa: E731
    assert set(methods(plan(model, stats, QuantConfig())).values()) == {"per_channel"}
    assert methods(plan(model, stats, QuantConfig(**SNQ))) == {"w0": "per_channel", "w1": "snq", "w2": "snq", "w3": "snq",
                                                               "wh": "per_channel"}
    assert set(methods(plan(model, stats, QuantConfig(**SNQ, snq_keep_ends=False))).values()) == {"snq"}
    mixed = QuantConfig(**SNQ, overrides={"conv2": {"weight_algo": "arq"}})
    assert methods(plan(model, stats, mixed))["w2"] == "per_channel"
    assert methods(plan(model, stats, QuantConfig(overrides={"conv1": {"weight_algo": "snq"}})))["w1"] == "snq"


def test_snq_model_runs_int8_kernels_and_matches_a_numpy_reference(chain, tmp_path):
    model, stats, data = chain
    p = plan(model, stats, QuantConfig(th_method="max", **SNQ))
    q = emit_qdq(model, p)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for name in ("w1", "w2", "w3"):
        assert max(_distinct_per_channel(inits[f"{name}_quantized"])) <= LEVELS
    assert max(_distinct_per_channel(inits["w0_quantized"])) > LEVELS  # the first layer stays uniform INT8
    got = _run(q, data[:8], str(tmp_path / "opt.onnx"))
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    # numpy: the FP32 graph with every tensor passed through its planned grid, weights from the plan
    x = data[:8].astype(np.float64)
    for k in range(4):
        x = _fake(x, p.tensors["x" if k == 0 else f"r{k - 1}"])
        w, b = _weight(p, f"w{k}"), _bias(p, f"b{k}")
        x = _fake(np.maximum(_conv3x3(x, w) + b[None, :, None, None], 0), p.tensors[f"r{k}"])
    y = np.einsum("nchw,oc->nohw", x, _weight(p, "wh")[:, :, 0, 0]) + _bias(p, "bh")[None, :, None, None]
    y = _fake(y, p.tensors["y"])
    step = float(p.tensors["y"].scale)
    assert np.abs(got - y).max() <= 2 * step + 1e-6
    assert np.mean(np.abs(got - y) > 0.5 * step + 1e-6) < 0.01  # rounding ties only


def _fake(x: np.ndarray, tq) -> np.ndarray:
    dtype, zero = tq.stored()
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    s, z = float(tq.scale), float(np.asarray(zero).reshape(-1)[0])
    return (np.clip(np.rint(x / s) + z, lo, hi) - z) * s


def _weight(p, name: str) -> np.ndarray:
    tq = p.tensors[name]
    return tq.values.astype(np.float64) * np.asarray(tq.scale, np.float64).reshape(-1, 1, 1, 1)


def _bias(p, name: str) -> np.ndarray:
    tq = p.tensors[name]
    return tq.values.astype(np.float64) * np.asarray(tq.scale, np.float64).reshape(-1)


def _conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", padded[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


@pytest.mark.parametrize("opset", [17, 21])
def test_deploy_form_rebuilds_the_weights_exactly_in_half_the_bytes(chain, tmp_path, opset):
    model, stats, data = chain
    p = plan(model, stats, QuantConfig(**SNQ, snq_keep_ends=False))
    q = emit_qdq(model, p)
    for o in q.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset  # the chain's ops read the same at 17 and 21
    deploy = int4_deploy(q, snq_weights(p))
    onnx.checker.check_model(deploy)
    names = {t.name for t in deploy.graph.initializer}
    assert not {f"{w}_quantized" for w in snq_weights(p)} & names
    index = [t for t in deploy.graph.initializer if t.name.endswith("snq_index")]
    assert len(index) == 5 and all(t.data_type == (TensorProto.UINT4 if opset >= 21 else TensorProto.UINT8) for t in index)
    packed = sum(len(t.SerializeToString()) for t in index)
    codes = sum(np.size(p.tensors[w].values) for w in snq_weights(p))
    assert packed < 0.55 * codes
    y = _run(q, data[:8])
    got = _run(deploy, data[:8], str(tmp_path / "opt.onnx"))
    assert np.array_equal(got, y)
    fused = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "QLinearConv" in fused and "Gather" not in fused  # folded at session start


def test_bn_update_brings_the_quantized_statistics_back_to_fp32(chain, tmp_path):
    model, stats, data = chain
    p = plan(model, stats, QuantConfig(**SNQ, snq_keep_ends=False))
    batches = [{"x": data[:32]}]
    updated, report = update_bn(model, p, batches, iterations=16, fraction=0.5, progress=False)
    assert report.convs == 5
    for name in ("w1", "w2"):  # the codes, and so the 16 levels, stay; the scales move
        assert np.array_equal(updated.tensors[name].values, p.tensors[name].values)
    assert any(not np.allclose(updated.tensors[w].scale, p.tensors[w].scale) for w in ("w0", "w1", "w2", "w3", "wh"))

    def gap(pl) -> float:  # per-channel mean and std distance of the ReLU outputs to FP32's, on the samples
        outputs = [f"r{k}" for k in range(4)]
        ref = _outputs(model, outputs, data[:32])
        got = _outputs(emit_qdq(model, pl), outputs, data[:32])
        return sum(np.abs(r.mean((0, 2, 3)) - g.mean((0, 2, 3))).mean() + np.abs(r.std((0, 2, 3)) - g.std((0, 2, 3))).mean()
                   for r, g in zip(ref, got))

    assert gap(updated) < 0.8 * gap(p)
    path = report.save(tmp_path / "bn")
    with np.load(path) as f:
        assert {"conv1/gain", "conv1/shift", "conv1/fp32_mean", "conv1/quant_var"} <= set(f.files)


def _outputs(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, {"x": x})


def test_cli_snq_with_bn_update_writes_the_deploy_model(tmp_path, capsys):
    np.save(tmp_path / "calib.npy", load_demo_data()["calib"][:64])
    out = tmp_path / "out"
    args = ["quantize", str(demo_model_path()), "--data", str(tmp_path / "calib.npy"), "-o", str(out), "--no-progress",
            "--json", "--weight-algo", "snq", "--weight-bits", "4", "--update-bn", "--bn-update-iterations", "8",
            "--bn-dump-dir", str(tmp_path / "bn")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    deploy, fake = summary["int4_deploy_model"], summary["int8_model"]
    assert "update_bn" in summary["timings_s"] and (tmp_path / "bn" / "bn_update.npz").is_file()
    x = load_demo_data()["test"][:16]
    name = ort.InferenceSession(fake, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]  # noqa: E731
    assert np.array_equal(run(deploy), run(fake))


def test_cli_refuses_an_snq_option_out_of_range_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "calib.npy", load_demo_data()["calib"][:8])
    code = main(["quantize", str(demo_model_path()), "--data", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "o"),
                 "--weight-algo", "snq", "--weight-bits", "4", "--snq-iterations", "100", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "500 to 2000" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_snq_conv_that_runs_in_float_keeps_its_codes_for_the_int4_deploy_model(chain):
    """conv2's output feeds float conv3, so onnxruntime runs conv2 in float; a uniform conv there
    would get float weights, but SNQ weights keep their 4-bit codes, which int4_deploy packs."""
    from int8kit.analysis.ort_fusion import convs_run_in_float

    model, stats, _ = chain
    p = plan(model, stats, QuantConfig(th_method="max", fp_layers=("conv3",), **SNQ))
    assert p.tensors["w2"].method == "snq"
    q = emit_qdq(model, p)
    assert "conv2" in convs_run_in_float(q)
    inits = {t.name for t in q.graph.initializer}
    assert "w2_quantized" in inits and "w2" not in inits
    packed = int4_deploy(q, snq_weights(p))
    assert "w2_quantized" not in {t.name for t in packed.graph.initializer}  # now 4-bit indices and codebooks

    uniform = emit_qdq(model, plan(model, stats, QuantConfig(th_method="max", fp_layers=("conv3",))))
    assert "w2" in {t.name for t in uniform.graph.initializer}  # written as float: the conv runs in float
