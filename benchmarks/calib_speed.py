"""Calibration cost against plain FP32 inference on an EfficientNet-Lite0-shaped network.

Builds the network with torch (random weights, BN folded on export), then times one optimized
onnxruntime pass over N samples and one ``collect`` pass over the same samples, and prints
collect_time / inference_time. Usage: python benchmarks/calib_speed.py [samples] [resolution]
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import onnx
import torch
from torch import nn

from int8kit.calib.collect import collect
from int8kit.runtime.session import make_session

# EfficientNet-Lite0 stages: (expand ratio, channels, repeats, stride, kernel)
STAGES = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]


def _cbr(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, e: int, s: int, k: int):
        super().__init__()
        mid = cin * e
        layers = (_cbr(cin, mid, 1, 1) if e != 1 else []) + _cbr(mid, mid, k, s, groups=mid) + _cbr(mid, cout, 1, 1, act=False)
        self.body = nn.Sequential(*layers)
        self.skip = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.skip else y


def lite0() -> nn.Module:
    layers: list[nn.Module] = _cbr(3, 32, 3, 2)
    cin = 32
    for e, c, r, s, k in STAGES:
        for i in range(r):
            layers.append(MBConv(cin, c, e, s if i == 0 else 1, k))
            cin = c
    layers += _cbr(cin, 1280, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    net = nn.Sequential(*layers).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # non-trivial BN statistics so folding changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    res = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/lite0.onnx"
        torch.onnx.export(lite0(), torch.randn(1, 3, res, res), path, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}})
        model = onnx.load(path)
    x = np.random.default_rng(0).standard_normal((n, 3, res, res)).astype(np.float32)
    sess = make_session(model)
    bs = 32
    sess.run(None, {"image": x[:bs]})  # warm-up
    plain = float("inf")
    for _ in range(2):  # best of two: the machine may be shared
        t = time.perf_counter()
        for i in range(0, n, bs):
            sess.run(None, {"image": x[i : i + bs]})
        plain = min(plain, time.perf_counter() - t)
    t = time.perf_counter()
    stats = collect(model, x, batch_size=bs, progress=False)
    cal = time.perf_counter() - t
    elems = sum(s.hist.count for s in stats.tensors.values())
    print(f"nodes={len(model.graph.node)} tensors={len(stats.tensors)} values/sample={elems / n / 1e6:.1f}M")
    print(f"plain inference {plain:.2f}s, collect {cal:.2f}s, ratio {cal / plain:.2f}")


if __name__ == "__main__":
    main()
