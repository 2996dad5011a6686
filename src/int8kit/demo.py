"""``int8kit demo``: quantize the bundled MNIST CNN and show what INT8 costs and gains."""

from __future__ import annotations

import os
from pathlib import Path

from tabulate import tabulate

from int8kit import api
from int8kit.demo_data import demo_model_path, load_demo_data


def run_demo(*, output_dir: str | os.PathLike = "int8kit-demo", progress: bool = True) -> str:
    """Quantize the embedded model with its shipped calibration images; return a printable report."""
    data = load_demo_data()
    fp32 = demo_model_path()
    result = api.quantize(fp32, data["calib"], output_dir=output_dir, th_method="kl", per_channel=True, progress=progress)
    ev = api.evaluate(fp32, result.int8_model, data["test"], labels=data["test_labels"], progress=progress)
    d = ev.to_dict()
    size_fp32 = Path(fp32).stat().st_size / 1e6
    size_int8 = Path(result.int8_model).stat().st_size / 1e6
    rows = [
        ("top-1 accuracy", _fmt(d, "fp32", "top1"), _fmt(d, "int8", "top1")),
        ("model size (MB)", f"{size_fp32:.3f}", f"{size_int8:.3f}"),
        ("latency, batch 1, 1 thread (ms)", _fmt(d, "fp32", "latency_ms"), _fmt(d, "int8", "latency_ms")),
    ]
    table = tabulate(rows, headers=["", "FP32", "INT8"])
    lines = [
        f"int8kit demo: MNIST CNN, {len(data['calib'])} calibration images, {len(data['test'])} test images",
        table,
        f"top-1 agreement INT8 vs FP32: {d.get('top1_agreement', float('nan')):.4f}   mean cosine: {d.get('cosine', float('nan')):.5f}",
        f"stage times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()),
        f"outputs in {Path(output_dir).resolve()}: {result.int8_model.name}, {result.quant_json.name}, "
        f"{result.calibration_table.name}, {result.tensorrt_cache.name}",
    ]
    return "\n".join(lines)


def _fmt(d: dict, model: str, key: str) -> str:
    value = d.get(model, {}).get(key)
    return "n/a" if value is None else f"{value:.4f}" if key != "latency_ms" else f"{value:.3f}"
