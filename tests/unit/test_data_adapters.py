"""Data in the forms users of other quantizers bring: torch tensors and DataLoaders, (x, y) items,
single-sample dicts (NNCF's transform_fn), nncf.Dataset, get_next() readers; channels-last advice.

Each form must give exactly the calibration statistics of the same samples as one NumPy array.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.errors import DataError

RNG = np.random.default_rng(7)
X = RNG.standard_normal((40, 3, 8, 8)).astype(np.float32)
Y = RNG.integers(0, 10, 40)


def tiny_classifier() -> onnx.ModelProto:
    """conv → relu → global average pool → flatten → gemm: (N, 3, 8, 8) → (N, 10) logits."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal((10, 4)).astype(np.float32), "wf"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODEL = tiny_classifier()


def _ranges(data, **kw) -> dict[str, tuple[float, float]]:
    stats = int8kit.calibrate(MODEL, data, progress=False, **kw).stats
    assert stats.samples == kw.get("iterations", len(X))
    return {name: (t.min, t.max) for name, t in stats.tensors.items()}


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[float, float]]:
    return _ranges(X)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is an optional extra: the torch data forms need it")


def _evaluate(data, **kw):
    return int8kit.evaluate(MODEL, MODEL, data, latency=False, progress=False, **kw)


# ------------------------------------------------------------------ torch


def test_tensor_and_dict_of_tensors(torch, reference):
    assert _ranges(torch.from_numpy(X)) == reference
    assert _ranges({"x": torch.from_numpy(X)}) == reference


def test_dataloader_of_tensors_and_of_one_element_tuples(torch, reference):
    from torch.utils.data import DataLoader, TensorDataset

    assert _ranges(DataLoader(torch.from_numpy(X), batch_size=8)) == reference
    assert _ranges(DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=16)) == reference  # yields [x]


def test_dataloader_of_x_y_feeds_calibration_and_its_labels_feed_evaluate(torch, reference):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=8)
    assert _ranges(loader) == reference
    assert _ranges(loader, iterations=24) == _ranges(X[:24], iterations=24)
    from_loader = _evaluate(loader)
    given = _evaluate(X, labels=Y)
    assert from_loader.fp32_top1 is not None and from_loader.fp32_top1 == given.fp32_top1
    assert from_loader.fp32_top5 == given.fp32_top5
    # labels= wins over the loader's own
    assert _evaluate(loader, labels=np.zeros(40, np.int64)).fp32_top1 == _evaluate(X, labels=np.zeros(40, np.int64)).fp32_top1


def test_shuffling_dataloader_cannot_give_labels_for_evaluation(torch):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=8, shuffle=True)
    with pytest.raises(DataError, match="shuffle=False"):
        _evaluate(loader)


def test_per_sample_tensor_dicts_are_batched(torch, reference):
    samples = [{"x": torch.from_numpy(s)} for s in X]  # NNCF transform_fn style: no batch axis
    assert _ranges(samples) == reference


# ------------------------------------------------------------------ without torch


def test_per_sample_dicts_list_and_generator(reference):
    assert _ranges([{"x": s} for s in X]) == reference
    assert _ranges(({"x": s} for s in X)) == reference  # one-shot: batched in the stream
    assert _ranges([(s, int(y)) for s, y in zip(X, Y)]) == reference  # per-sample (x, y)


def test_per_sample_items_with_labels_feed_evaluate():
    items = [(s, int(y)) for s, y in zip(X, Y)]
    assert _evaluate(items).fp32_top1 == _evaluate(X, labels=Y).fp32_top1


def test_label_count_must_match_the_batch():
    with pytest.raises(DataError, match="one label per sample"):
        _ranges([(X[:8], Y[:7])])


class FakeNncfDataset:
    """nncf.Dataset's interface (get_inference_data applies transform_fn), for runs without nncf."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def get_inference_data(self, indices=None):
        return (self.transform(item) for item in self.source)

    def get_length(self):
        return len(self.source)


def test_nncf_style_dataset(reference):
    per_sample = FakeNncfDataset(list(zip(X, Y)), lambda item: {"x": item[0]})
    assert _ranges(per_sample) == reference
    batched = FakeNncfDataset([(X[i : i + 10], Y[i : i + 10]) for i in range(0, 40, 10)], lambda item: item[0])
    assert _ranges(batched) == reference
    assert _evaluate(batched).samples == 40  # re-read for the second pass


def test_real_nncf_dataset(reference):
    nncf = pytest.importorskip("nncf", reason="nncf is not installed: the real nncf.Dataset is not tested")
    assert _ranges(nncf.Dataset(list(X), lambda s: {"x": s})) == reference
    assert _ranges(nncf.Dataset([X[:20], X[20:]])) == reference


class Reader:
    """An onnxruntime-style reader: only get_next(), None at the end (rewind() when asked)."""

    def __init__(self, batches):
        self.batches, self.at = batches, 0

    def get_next(self):
        if self.at == len(self.batches):
            return None
        self.at += 1
        return self.batches[self.at - 1]


class RewindReader(Reader):
    def rewind(self):
        self.at = 0


def test_get_next_reader(reference):
    batches = [{"x": X[i : i + 8]} for i in range(0, 40, 8)]
    assert _ranges(Reader(batches)) == reference
    assert _evaluate(RewindReader(batches), labels=Y).samples == 40
    with pytest.raises(DataError, match="rewind"):  # evaluate reads twice; the second pass finds it spent
        _evaluate(Reader(batches), labels=Y)


# ------------------------------------------------------------------ layout advice


def test_channels_last_array_gets_the_transpose_advice():
    nhwc = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    for data in (nhwc, [{"x": nhwc[:8]}]):
        with pytest.raises(DataError, match=r"np\.transpose\(x, \(0, 3, 1, 2\)\)") as err:
            _ranges(data)
        assert "reshape it" not in str(err.value)
    assert _ranges(np.transpose(nhwc, (0, 3, 1, 2))) == _ranges(X)


def test_the_adapters_work_without_torch():
    """torch stays optional: with it unimportable, single-sample items still calibrate."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
        "import numpy as np, int8kit\n"
        "from tests.unit.test_data_adapters import MODEL, X\n"
        "s = int8kit.calibrate(MODEL, [{'x': x} for x in X], progress=False).stats\n"
        "assert s.samples == 40, s.samples\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]


def test_channels_last_samples_get_the_per_sample_transpose_too():
    with pytest.raises(DataError, match=r"\(2, 0, 1\) for one sample"):
        _ranges([{"x": np.ascontiguousarray(s.transpose(1, 2, 0))} for s in X])


def test_onnxruntime_calibration_data_reader(reference):
    from onnxruntime.quantization import CalibrationDataReader

    class OrtReader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": X[i : i + 8]} for i in range(0, 40, 8)])

        def get_next(self):
            return next(self.items, None)

    assert _ranges(OrtReader()) == reference


class CountingList(list):
    """A list that counts how often it is read through."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


def test_sized_single_sample_items_are_not_read_to_count_them(reference, torch):
    from torch.utils.data import DataLoader, TensorDataset

    items = CountingList((s, int(y)) for s, y in zip(X, Y))
    assert _ranges(items) == reference and items.passes == 2  # a look at the first item, then the pass
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=8)
    source = batches_from(loader, model_input_specs(MODEL)).source  # counted by its sampler
    assert len(source) == 40 and source.labels() == [int(y) for y in Y]
