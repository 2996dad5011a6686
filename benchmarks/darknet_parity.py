"""Darknet parity: every .cfg converts and its ONNX model in onnxruntime matches OpenCV dnn.

For each cfg: write random weights in the .weights format, read them with OpenCV's
readNetFromDarknet (the reference) and with int8kit's converter, run both on the same random
input and print per cfg: converted, OpenCV readable, max abs error / max |reference| and the
cosine (worst over outputs; yolo/region outputs are the raw maps feeding those layers).

    python benchmarks/darknet_parity.py                      # Debian's darknet cfgs, 160x160
    python benchmarks/darknet_parity.py --size 0 a.cfg b.cfg  # the cfgs' own input size
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEBIAN_CFG_DIR = Path("/usr/share/darknet/cfg")


@dataclass
class Row:
    cfg: str
    converted: str  # "yes" or the reason it did not
    opencv: str  # "yes" or the reason OpenCV could not read it
    size: str = ""
    rel_err: float = float("nan")
    cosine: float = float("nan")
    outputs: int = 0
    layers: int = 0  # intermediate layers compared by name (what --compare-all sees)
    layer_rel_err: float = float("nan")
    layer_cosine: float = float("nan")
    unnamed: list = None  # OpenCV layers without a same-named ONNX tensor
    seconds: float = 0.0


def _reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1][:110]


def _input_size(cfg: Path, size: int) -> tuple[int, int] | None:
    """A small input for nets without connected layers (their weights fix the size); None = cfg's own."""
    from int8kit.importers.darknet.cfg import parse_cfg

    net, sections = parse_cfg(cfg)
    if size <= 0 or any(s.kind == "connected" for s in sections):
        return None
    return min(size, net.get_int("height", 416)), min(size, net.get_int("width", 416))


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b| / max |b|, cosine) of two tensors holding the same number of values."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a.size != b.size:
        return float("inf"), float("nan")
    return (float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)),
            float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))


def _compare(row: Row, model, ref, shape: list[int], seed: int) -> None:
    """Fill ``row`` with output errors and the per-layer check of every shared layer name."""
    import onnx
    import onnxruntime as ort

    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    outputs = [o.name for o in model.graph.output]
    produced = {o for node in model.graph.node for o in node.output}
    shared = sorted((ref.layer_names & produced) - set(outputs))
    # OpenCV's permute_<i> reorders a map for its own yolo/region decoder; ONNX has no such layer
    row.unnamed = sorted(n for n in ref.layer_names - produced if not n.startswith("permute_"))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in shared)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(outputs + shared, sess.run(None, {"data": x})))
    want = ref.run({"data": x}) | ref.run({"data": x}, layers=shared)
    errs = [_errors(got[n], want[n]) for n in outputs]
    row.rel_err, row.cosine, row.outputs = max(e for e, _ in errs), min(c for _, c in errs), len(outputs)
    layer_errs = [_errors(got[n], want[n]) for n in shared]
    row.layers = len(shared)
    row.layer_rel_err = max((e for e, _ in layer_errs), default=float("nan"))
    row.layer_cosine = min((c for _, c in layer_errs), default=float("nan"))


def check_cfg(cfg: str | Path, workdir: str | Path, *, size: int = 160, seed: int = 0) -> Row:
    """Convert ``cfg`` with random weights and compare onnxruntime against OpenCV on one random input."""
    import cv2

    from int8kit.errors import Int8kitError
    from int8kit.importers import darknet
    from int8kit.importers.darknet.cfg import parse_cfg

    cfg = Path(cfg)
    start = time.perf_counter()
    row = Row(cfg.stem, "yes", "yes")
    weights = Path(workdir) / f"{cfg.stem}.weights"
    try:
        cv2.dnn.readNetFromDarknet(str(cfg))  # the cfg alone: does OpenCV support every section?
    except cv2.error as exc:
        row.opencv = f"no: {_reason(exc)}"
    shapes = None
    try:
        hw = _input_size(cfg, size)
        darknet.write_weights(weights, cfg, seed=seed)
        net = parse_cfg(cfg)[0]
        c = net.get_int("channels", 3)
        h, w = hw or (net.get_int("height", 416), net.get_int("width", 416))
        shapes = {"data": [1, c, h, w]}
        row.size = f"{h}x{w}"
        model = darknet.convert(cfg, weights, input_shapes=shapes)
    except Int8kitError as exc:
        row.converted = f"no: {_reason(exc)}"
    if row.converted == "yes" and row.opencv == "yes":
        try:
            _compare(row, model, darknet.reference(cfg, weights, input_shapes=shapes), shapes["data"], seed)
        except Int8kitError as exc:
            row.opencv = f"reads, cannot run: {_reason(exc)}"
    weights.unlink(missing_ok=True)
    row.seconds = time.perf_counter() - start
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cfgs", nargs="*", help="cfg files (default: every cfg in Debian's darknet package)")
    parser.add_argument("--size", type=int, default=160, help="input height/width for nets without connected layers; 0 = cfg's own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from tabulate import tabulate
    from tqdm import tqdm

    cfgs = [Path(c) for c in args.cfgs] or sorted(DEBIAN_CFG_DIR.glob("*.cfg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in tqdm(cfgs, desc="darknet parity", unit="cfg"):
            rows.append(check_cfg(cfg, tmp, size=args.size, seed=args.seed))
    table = [(r.cfg, r.converted[:60], r.opencv[:60], r.size, r.outputs or "",
              f"{r.rel_err:.2e}" if r.outputs else "", f"{r.cosine:.7f}" if r.outputs else "",
              f"{r.layers}: {r.layer_rel_err:.1e} / {r.layer_cosine:.9f}" if r.outputs else "",
              f"{r.seconds:.1f}") for r in rows]
    print(tabulate(table, headers=["cfg", "converted", "OpenCV runs", "input", "outputs", "max|err|/max|ref|",
                                   "cosine", "layers: worst rel err / cosine", "s"], tablefmt="github"))
    unnamed = {r.cfg: r.unnamed for r in rows if r.unnamed}
    if unnamed:
        print(f"OpenCV layers without a same-named ONNX tensor: {unnamed}")
    compared = [r for r in rows if r.outputs]
    bad = [r.cfg for r in compared
           if not (r.rel_err < 1e-4 and r.cosine > 0.99999 and r.layer_rel_err < 1e-4 and r.layer_cosine > 0.99999)]
    missed = [r.cfg for r in rows if r.opencv == "yes" and r.converted != "yes"]
    print(f"\n{len(compared)} of {len(rows)} cfgs compared; OpenCV-readable but not converted: {missed or 'none'}; "
          f"over tolerance: {bad or 'none'}")
    return 1 if bad or missed else 0


if __name__ == "__main__":
    sys.exit(main())
