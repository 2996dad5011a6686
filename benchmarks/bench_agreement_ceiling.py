"""How close to FP32 can EfficientNet-Lite0 get with INT8 activations? Top-1 agreement with FP32 of
one INT8 model per configuration, on the same test crops.

    python benchmarks/bench_agreement_ceiling.py [--calib 256] [--test 500] [--configs base,gptq,...]

Issue 16 asks ``int8kit auto --full`` for agreement >= 0.97 with >= 90 % of the MACs in INT8.
This script measures where the all-INT8 configurations stand against that: every quick-mode
strategy and tuning step int8kit has (threshold methods, per-tensor weights, bias correction off,
bias tuning, GPTQ rounding, the last two layers float) keeps the activations in INT8; the
``16-bit`` rows keep INT8 weights and store the activations in 16 bits (no integer kernel in
onnxruntime: an accuracy reference only), so they show what the weights alone cost. Scores are on
all crops and on the halves ``int8kit auto`` cuts (validation = first half, held-out = second),
with 95 % Wilson intervals, and the mean squared error of the logits against FP32's. The first row
is FP32 itself on inputs moved by uniform noise of half a pixel step (the crops are (x - 127) / 128
of 0..255 pixels): how far the top-1 of these crops moves when nothing is quantized.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

import int8kit  # noqa: E402
from benchmarks.auto_task import Scored, Task, run_any  # noqa: E402

_LAST_TWO = ["/_conv_head/Conv", "/_fc/Gemm"]
CONFIGS = {
    "base": {},
    "th_method max": {"th_method": "max"},
    "th_method mse": {"th_method": "mse"},
    "th_method auto": {"th_method": "auto"},
    "per-tensor weights": {"per_channel": False},
    "no bias correction": {"bias_correction": False},
    "bias tuning 64": {"bias_tuning": 64},
    "GPTQ rounding": {"weight_rounding": "gptq"},
    "GPTQ + bias tuning 64": {"weight_rounding": "gptq", "bias_tuning": 64},
    "GPTQ + head conv and fc float": {"weight_rounding": "gptq", "fp_layers": _LAST_TWO},
    "16-bit activations": {"bitwidth": 16},
    "16-bit activations + GPTQ": {"bitwidth": 16, "weight_rounding": "gptq"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names from: " + ", ".join(CONFIGS))
    args = p.parse_args()
    task = Task("effnet", args.calib, args.test)
    fp32 = task._fp32_logits
    rng = np.random.default_rng(0)
    noisy = {k: (v + rng.uniform(-0.5, 0.5, v.shape) / 128).astype(np.float32) for k, v in task.test.items()}
    outputs = {"FP32, half a pixel step of input noise": run_any(str(task.model), noisy)}
    rows = []
    for name in ["FP32, half a pixel step of input noise", *args.configs.split(",")]:
        if name not in outputs:
            result = int8kit.quantize(str(task.model), task.calib, output_dir=None, progress=False, **CONFIGS[name])
            outputs[name] = run_any(result.model, task.test)
        hits = (outputs[name].argmax(1) == fp32.argmax(1)).astype(np.int64)
        halves = (hits, hits[: task.half], hits[task.half:])
        mse = float(np.mean((outputs[name] - fp32) ** 2))
        rows.append([name, *(Scored.of(h).text() for h in halves), f"{mse:.2e}"])
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"EfficientNet-Lite0, top-1 agreement with FP32; {args.calib} calibration, {args.test} test crops")
    print(tabulate(rows, headers=["configuration", f"all {args.test}", f"validation {task.half}",
                                  f"held-out {args.test - task.half}", "logits MSE"], tablefmt="github"))


if __name__ == "__main__":
    main()
