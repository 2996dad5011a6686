"""TensorFlow import through tf2onnx, checked against TensorFlow itself, then quantized.

A small Keras CNN (conv, batch norm with trained-looking statistics, depthwise conv, pooling,
dense) is built in code and saved the three ways int8kit reads: a SavedModel folder, a Keras
``.keras`` file and a frozen ``.pb`` GraphDef. Needs ``tensorflow`` (or ``tensorflow-cpu``) and
``tf2onnx``; CI does not install them (TensorFlow is a large download for three tests), so these
tests skip there with that reason.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.e2e

_MISSING = [m for m in ("tensorflow", "tf2onnx") if importlib.util.find_spec(m) is None]
_SKIP = ("TensorFlow import test needs tensorflow and tf2onnx (pip install tensorflow-cpu tf2onnx); "
         "CI does not install them: too heavy")


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory):
    """The same Keras CNN as a SavedModel folder, a .keras file and a frozen .pb."""
    if _MISSING:
        pytest.skip(f"{_SKIP}; missing: {', '.join(_MISSING)}")
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inp, keras.layers.Dense(10, name="logits")(x))
    rng = np.random.default_rng(0)
    # non-trivial batch-norm statistics and biases, so a conversion that drops them shows
    net.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype(w.dtype) if w.ndim == 1 else w for w in net.get_weights()])

    root = tmp_path_factory.mktemp("tf")
    net.export(str(root / "saved"), verbose=False)
    net.save(str(root / "tiny.keras"))
    fn = tf.function(lambda t: net(t, training=False)).get_concrete_function(
        tf.TensorSpec([None, 24, 24, 3], tf.float32, name="image"))
    tf.io.write_graph(convert_variables_to_constants_v2(fn).graph.as_graph_def(), str(root), "frozen.pb", as_text=False)
    return root, net


@pytest.mark.parametrize("name", ["saved", "tiny.keras", "frozen.pb"])
def test_tensorflow_model_converts_and_matches_tensorflow(tf_models, name, tmp_path):
    from int8kit import api

    root, net = tf_models
    result = api.convert(root / name, output=tmp_path / "m.onnx", compare=True, samples=4, progress=False)
    assert result.framework == "tensorflow"  # told by the folder / extension, no --framework
    assert result.compare.ok, result.compare.to_table()
    assert all(d.cosine > 0.9999 and d.note == "" and d.shape == (10,) for d in result.compare.outputs)
    model = onnx.load(str(result.path))
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [24, 24, 3] and isinstance(dims[0], str)  # TensorFlow's NHWC layout, dynamic batch

    # the ONNX model and Keras agree on a batch of 5, not just the compare's batch of 1
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((5, 24, 24, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(net(x, training=False)), rtol=1e-4, atol=1e-5)


def test_converted_tensorflow_model_quantizes(tf_models, tmp_path):
    import onnxruntime as ort

    from int8kit import api

    root, _ = tf_models
    calib = np.random.default_rng(2).standard_normal((32, 24, 24, 3)).astype(np.float32)
    q = api.quantize(root / "saved", calib, output_dir=tmp_path / "q", progress=False)  # converted in memory
    int8 = onnx.load(str(q.int8_model))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) >= 3
    fp32 = ort.InferenceSession(str(q.fp32_optimized_model), providers=["CPUExecutionProvider"])
    quant = ort.InferenceSession(str(q.int8_model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((16, 24, 24, 3)).astype(np.float32)
    a = fp32.run(None, {fp32.get_inputs()[0].name: x})[0]
    b = quant.run(None, {quant.get_inputs()[0].name: x})[0]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99 and (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_missing_tensorflow_packages_are_named(tmp_path):
    if not _MISSING:
        pytest.skip("tensorflow and tf2onnx are installed here; the missing-package message cannot be seen")
    from int8kit import api
    from int8kit.errors import ConfigError

    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ConfigError, match="pip install tensorflow-cpu tf2onnx") as err:
        api.convert(tmp_path / "saved", output=tmp_path / "m.onnx", progress=False)
    assert all(m.replace("tensorflow", "tensorflow-cpu") in str(err.value) for m in _MISSING)
