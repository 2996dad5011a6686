"""PaddlePaddle import through paddle2onnx, checked against Paddle Inference, then quantized.

A small Paddle CNN (conv, batch norm with trained-looking statistics, strided conv, pooling,
linear) is built in code and saved with ``paddle.jit.save`` in both program formats: Paddle 3's
``.json`` and the older ``.pdmodel`` (``FLAGS_enable_pir_api=0``, in a subprocess so the flag does
not leak), each with its ``.pdiparams``. Needs ``paddlepaddle`` and ``paddle2onnx``; CI does not
install them (Paddle is a large download, and paddle2onnx pins onnx<=1.17, which would downgrade
the onnx int8kit is tested with), so these tests skip there with that reason.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.e2e

_MISSING = [m for m in ("paddle", "paddle2onnx") if importlib.util.find_spec(m) is None]
_SKIP = ("Paddle import test needs paddlepaddle and paddle2onnx (pip install paddlepaddle paddle2onnx, in a separate "
         "virtualenv); CI does not install them: too heavy, and paddle2onnx pins onnx<=1.17")

_BUILD = textwrap.dedent('''
    import sys
    import numpy as np
    import paddle

    paddle.seed(0)

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.c1 = paddle.nn.Conv2D(3, 8, 3, padding=1)
            self.bn = paddle.nn.BatchNorm2D(8)
            self.c2 = paddle.nn.Conv2D(8, 16, 3, stride=2, padding=1)
            self.pool = paddle.nn.AdaptiveAvgPool2D(1)
            self.fc = paddle.nn.Linear(16, 10)

        def forward(self, x):
            x = paddle.nn.functional.relu(self.bn(self.c1(x)))
            x = paddle.nn.functional.relu(self.c2(x))
            return self.fc(paddle.flatten(self.pool(x), 1))

    net = Net()
    rng = np.random.default_rng(0)
    # non-trivial batch-norm statistics and biases, so a conversion that drops them shows
    for name, p in net.state_dict().items():
        if p.ndim == 1:
            p.set_value(p.numpy() + rng.uniform(0.1, 0.5, p.shape).astype("float32"))
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, 24, 24], "float32", "image")]
    paddle.jit.save(net, sys.argv[1], input_spec=spec)
''')


@pytest.fixture(scope="module")
def paddle_models(tmp_path_factory):
    """The same Paddle CNN saved as tiny.json (+ .pdiparams) and old/tiny.pdmodel (+ .pdiparams)."""
    if _MISSING:
        pytest.skip(f"{_SKIP}; missing: {', '.join(_MISSING)}")
    root = tmp_path_factory.mktemp("paddle")
    (root / "old").mkdir()
    script = root / "build.py"
    script.write_text(_BUILD)
    for prefix, pir in ((root / "tiny", "1"), (root / "old" / "tiny", "0")):
        env = {**os.environ, "FLAGS_enable_pir_api": pir}
        subprocess.run([sys.executable, str(script), str(prefix)], check=True, env=env, capture_output=True)
    assert (root / "tiny.json").exists() and (root / "old" / "tiny.pdmodel").exists()
    return root


@pytest.mark.parametrize("name", ["tiny.json", "old/tiny.pdmodel"])
def test_paddle_model_converts_and_matches_paddle_inference(paddle_models, name, tmp_path):
    from int8kit import api

    result = api.convert(paddle_models / name, output=tmp_path / "m.onnx", compare=True, samples=4, progress=False)
    assert result.framework == "paddle"  # told by the extension (.json with .pdiparams beside it)
    assert result.compare.ok, result.compare.to_table()
    assert all(d.cosine > 0.9999 and d.note == "" and d.shape == (10,) for d in result.compare.outputs)
    model = onnx.load(str(result.path))
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 24, 24] and isinstance(dims[0], str)  # dynamic batch kept

    # a batch of 5 through --compare's data path, with the input renamed on the ONNX side
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).standard_normal((5, 3, 24, 24)).astype(np.float32))
    renamed = api.convert(paddle_models / name, output=tmp_path / "r.onnx", input_names="pixels", data=str(data),
                          batch_size=5, compare=True, progress=False)
    assert renamed.compare.ok and renamed.compare.samples == 5, renamed.compare.to_table()
    assert onnx.load(str(renamed.path)).graph.input[0].name == "pixels"


def test_paddle_files_quantize_directly(paddle_models, tmp_path):
    import onnxruntime as ort

    from int8kit import api

    calib = np.random.default_rng(2).standard_normal((32, 3, 24, 24)).astype(np.float32)
    q = api.quantize(paddle_models / "tiny.json", calib, output_dir=tmp_path / "q", progress=False)
    int8 = onnx.load(str(q.int8_model))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) >= 3
    fp32 = ort.InferenceSession(str(q.fp32_optimized_model), providers=["CPUExecutionProvider"])
    quant = ort.InferenceSession(str(q.int8_model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((16, 3, 24, 24)).astype(np.float32)
    a = fp32.run(None, {fp32.get_inputs()[0].name: x})[0]
    b = quant.run(None, {quant.get_inputs()[0].name: x})[0]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99 and (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_paddle_params_file_is_asked_for(paddle_models, tmp_path):
    from int8kit import api
    from int8kit.errors import ConfigError

    lone = tmp_path / "lone.pdmodel"
    lone.write_bytes((paddle_models / "old" / "tiny.pdmodel").read_bytes())
    with pytest.raises(ConfigError, match="--weights model.pdiparams"):
        api.convert(lone, output=tmp_path / "m.onnx", progress=False)


def test_missing_paddle_packages_are_named(tmp_path):
    if not _MISSING:
        pytest.skip("paddlepaddle and paddle2onnx are installed here; the missing-package message cannot be seen")
    from int8kit import api
    from int8kit.errors import ConfigError

    (tmp_path / "m.pdmodel").write_bytes(b"")
    (tmp_path / "m.pdiparams").write_bytes(b"")
    with pytest.raises(ConfigError, match="pip install paddlepaddle paddle2onnx") as err:
        api.convert(tmp_path / "m.pdmodel", output=tmp_path / "m.onnx", progress=False)
    assert "onnx<=1.17" in str(err.value)
