"""PyTorch import on tiny modules built in code: TorchScript files, module:factory, state dicts, per-layer compare."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from int8kit.cli import main  # noqa: E402
from int8kit.errors import ConfigError, ModelError  # noqa: E402
from int8kit.importers import pytorch as pt  # noqa: E402
from int8kit.importers.compare import compare  # noqa: E402

FACTORY_SOURCE = textwrap.dedent('''
    import torch

    class Block(torch.nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(cout)
            self.act = torch.nn.ReLU6()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(Block(3, 8), Block(8, 8))
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            f = self.features(x)
            return self.fc(f.mean((2, 3))), f

    def build():
        torch.manual_seed(0)
        model = Tiny()
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        return model.eval()
''')


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "tinynet.py"
    path.write_text(FACTORY_SOURCE)
    return path


@pytest.fixture()
def torchscript_file(tmp_path, factory_file):
    model = pt.load_module(f"{factory_file}:build")
    path = tmp_path / "tiny.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 8, 8)).save(str(path))
    return path


def test_factory_from_file_converts_with_dynamic_batch_and_bn_kept(factory_file):
    model = pt.convert(f"{factory_file}:build", input_shapes=[(1, 3, 8, 8)])
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output0", "output1"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 2 and "Identity" not in ops
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == pt.OPSET


def test_importable_module_factory_and_compare_layers(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    result = compare("pytorch", "tinynet:build", input_shapes="(2,3,8,8)", layers=True, samples=4, progress=False)
    assert result.ok and [d.name for d in result.outputs] == ["output0", "output1"]
    assert all(d.cosine > 0.99999 for d in result.outputs)
    names = {d.name for d in result.layers}
    # one row per module output: conv, bn and act of both blocks, and fc
    assert {"/features/features.0/conv/Conv", "/features/features.0/bn/BatchNormalization",
            "/features/features.1/act/Clip", "/fc/Gemm"} <= names
    assert all(d.ok and d.note == "" for d in result.layers)


def test_module_scope_reconstructs_dotted_names():
    assert pt.module_scope("/features/features.0/conv/Conv") == "features.0.conv"
    assert pt.module_scope("/features/0/conv/Conv_1") == "features.0.conv"  # TorchScript style
    assert pt.module_scope("/Mul") == "" and pt.module_scope("Identity_3") is None
    nodes = ["/a/Pad", "/a/Conv", "/a/b/Relu", "/Add"]
    assert pt.layer_modules(nodes, {"a", "a.b"}) == {"/a/b/Relu": "a.b"}  # the innermost module wins


def test_torchscript_file_converts_and_compares_outputs(torchscript_file, factory_file):
    model = pt.convert(torchscript_file, input_shapes=[(1, 3, 8, 8)], input_names=["image"])
    assert [i.name for i in model.graph.input] == ["image"]
    result = compare("pytorch", torchscript_file, input_shapes="(1,3,8,8)", input_names="image", samples=2,
                     onnx_model=model, progress=False)
    assert result.ok and result.outputs[0].max_abs_error < 1e-4
    with pytest.raises(ConfigError, match="TorchScript modules take no forward hooks"):
        compare("pytorch", torchscript_file, input_shapes="(1,3,8,8)", layers=True, progress=False)


def test_state_dict_weights_are_loaded(factory_file, tmp_path):
    module = pt.load_module(f"{factory_file}:build")
    state = {k: v + 0.25 if k == "fc.bias" else v for k, v in module.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    ref = pt.reference(f"{factory_file}:build", tmp_path / "w.pth", input_shapes=[(1, 3, 8, 8)])
    base = pt.reference(f"{factory_file}:build", input_shapes=[(1, 3, 8, 8)])
    x = {"input": np.ones((1, 3, 8, 8), np.float32)}
    np.testing.assert_allclose(ref.run(x)["output0"] - base.run(x)["output0"], 0.25, atol=1e-5)
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="does not fit the model"):
        pt.load_module(f"{factory_file}:build", tmp_path / "bad.pth")


def test_clear_errors(factory_file, tmp_path):
    with pytest.raises(ConfigError, match="--input-shapes"):
        pt.convert(f"{factory_file}:build")
    with pytest.raises(ModelError, match="has no 'nope'"):
        pt.convert(f"{factory_file}:nope", input_shapes=[(1, 3, 8, 8)])
    pickle_file = tmp_path / "eager.pt"
    torch.save({"x": torch.zeros(1)}, pickle_file)
    with pytest.raises(ModelError, match="not a TorchScript archive"):
        pt.convert(pickle_file, input_shapes=[(1, 3, 8, 8)])
    with pytest.raises(ConfigError, match="fails on inputs of shapes"):
        pt.convert(f"{factory_file}:build", input_shapes=[(1, 4, 8, 8)])


def test_parity_check_catches_frozen_control_flow(tmp_path):
    src = tmp_path / "branchy.py"
    src.write_text(textwrap.dedent('''
        import torch

        class Branchy(torch.nn.Module):
            def forward(self, x):
                if x.shape[0] > 1:  # traced at batch 1: the other branch is frozen out of the graph
                    return x * 2
                return x - 100

        def build():
            return Branchy()
    '''))
    with pytest.raises(ModelError, match="differs from torch"):  # the parity run uses batch 2
        pt.convert(f"{src}:build", input_shapes=[(1, 4)])
    assert pt.convert(f"{src}:build", input_shapes=[(1, 4)], dynamic_batch=False).graph.node  # fixed batch: fine


def test_cli_convert_pytorch_factory(factory_file, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    code = main(["convert", "--framework", "pytorch", "--model", f"{factory_file}:build", "--input-shapes", "(1,3,8,8)",
                 "-o", str(out), "--compare-all", "--json", "--no-progress"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["compare"]["ok"] and len(payload["compare"]["layers"]) >= 7
    assert onnx.load(out).graph.output[0].name == "output0"


def test_compare_builds_the_factory_module_once(tmp_path, capsys):
    """An unseeded factory builds a different model each call; the export and the reference must
    be the same module, or a correct conversion fails its compare."""
    src = tmp_path / "unseeded.py"
    src.write_text(FACTORY_SOURCE.replace("torch.manual_seed(0)", "print('built', file=__import__('sys').stderr)"))
    out = tmp_path / "u.onnx"
    code = main(["convert", "--model", f"{src}:build", "--input-shapes", "(1,3,8,8)", "-o", str(out), "--compare",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert captured.err.count("built") == 1


def test_cli_quantize_and_eval_take_the_pytorch_model(factory_file, tmp_path, capsys):
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    spec = f"{factory_file}:build"
    assert main(["quantize", spec, "--framework", "pytorch", "--input-shapes", "(1,3,8,8)", "--data", str(data),
                 "-o", str(tmp_path / "q"), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "convert" in summary["timings_s"] and summary["quantized_tensors"] > 0
    assert summary["int8_model"].endswith("build_int8.onnx")  # named after the factory
    assert main(["eval", spec, summary["int8_model"], "--framework", "pytorch", "--input-shapes", "(1,3,8,8)",
                 "--data", str(data), "--json", "--no-progress", "--no-latency"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 8 and report["outputs"][0]["mean_cosine"] > 0.9


def test_api_takes_an_in_memory_module(factory_file, tmp_path):
    from int8kit import api

    module = pt.load_module(f"{factory_file}:build")
    result = api.convert(module, input_shapes="(1,3,8,8)", output=tmp_path / "m.onnx", compare=True, samples=2,
                         progress=False)
    assert result.framework == "pytorch" and result.compare.ok and result.compare.model == "<Tiny>"
    data = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    q = api.quantize(module, data, input_shapes="(1,3,8,8)", output_dir=tmp_path / "q", progress=False)
    assert q.int8_model.name == "model_int8.onnx" and "convert" in q.timings
