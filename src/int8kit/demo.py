"""``int8kit demo``: quantize the bundled MNIST CNN and show what INT8 costs and gains."""

from __future__ import annotations

import os
from pathlib import Path

from int8kit import api
from int8kit.demo_data import demo_model_path, load_demo_data


def run_demo(*, output_dir: str | os.PathLike = "int8kit-demo", progress: bool = True) -> str:
    """Quantize the embedded model with its shipped calibration images; return a printable report."""
    data = load_demo_data()
    fp32 = demo_model_path()
    result = api.quantize(fp32, data["calib"], output_dir=output_dir, th_method="kl", per_channel=True, progress=progress)
    report = api.evaluate(fp32, result.int8_model, data["test"], labels=data["test_labels"], progress=progress)
    out = Path(output_dir).resolve()
    return "\n".join(
        [
            f"int8kit demo: MNIST CNN, {len(data['calib'])} calibration images (kl, per-channel), "
            f"{len(data['test'])} labelled test images",
            "",
            report.to_table(),
            "",
            "stage times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()),
            f"outputs in {out}:",
            *(f"  {p.name}" for p in (result.int8_model, result.fp32_optimized_model, result.quant_json,
                                     result.calibration_table, result.tensorrt_cache)),
        ]
    )
