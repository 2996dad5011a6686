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

``--budget`` adds where the error of the GPTQ model comes from: the same model with the rounding
of one group of activations switched off (each QuantizeLinear -> DequantizeLinear pair of the group
becomes a Clip to the pair's range, so what the range clips stays clipped), by what the tensor feeds:
depthwise convs (the expand convs' ReLU6 outputs), project convs (the depthwise convs' outputs), or
the expand convs and the head conv (the residual stream: project conv and Add outputs); and with
every activation's rounding off, which leaves the INT8 weights and the clipping alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from tabulate import tabulate  # noqa: E402

import int8kit  # noqa: E402
from int8kit.graph.graphview import GraphView  # noqa: E402
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
    p.add_argument("--budget", action="store_true", help="also: the GPTQ model's error by activation group")
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
    if args.budget:
        error_budget(task)


# what a quantized activation feeds, by the name of its conv reader in EfficientNet-Lite0's graph
GROUPS = {"depthwise conv inputs": ("_depthwise_conv",), "project conv inputs": ("_project_conv",),
          "residual stream (expand and head conv inputs)": ("_expand_conv", "_conv_head")}


def rounding_off(model: onnx.ModelProto, feeds: tuple[str, ...] | None) -> onnx.ModelProto:
    """``model`` with every activation Q -> DQ pair whose DQ feeds a node named with one of ``feeds``
    (all pairs: ``None``) replaced by a Clip of the float tensor to the pair's range."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    view = GraphView(graph)  # indexed before the loop rewires the pairs: each pair's readers are its own
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]:
        dqs = view.consumers_of(q.output[0])
        fed = [r.name for dq in dqs for r in view.consumers_of(dq.output[0])]
        if feeds is not None and not any(key in name for name in fed for key in feeds):
            continue
        scale, zero = (numpy_helper.to_array(inits[q.input[k]]) for k in (1, 2))
        grid = np.iinfo(zero.dtype)
        bounds = [numpy_helper.from_array(np.array((v - int(zero)) * float(scale), np.float32), f"{q.name}_{end}")
                  for v, end in ((grid.min, "low"), (grid.max, "high"))]
        graph.initializer.extend(bounds)
        for dq in dqs:  # the DQ becomes the Clip, so its readers need no rewiring
            dq.op_type = "Clip"
            dq.ClearField("input")
            dq.input.extend([q.input[0], bounds[0].name, bounds[1].name])
        graph.node.remove(q)
    return out


def error_budget(task: Task) -> None:
    """The GPTQ model with the rounding of each activation group off in turn, then of all."""
    fp32 = task._fp32_logits
    model = int8kit.quantize(str(task.model), task.calib, output_dir=None, progress=False, **CONFIGS["GPTQ rounding"]).model
    variants = {"GPTQ rounding, all INT8": model}
    variants.update({f"rounding off: {name}": rounding_off(model, feeds) for name, feeds in GROUPS.items()})
    variants["rounding off: every activation (INT8 weights and clipping left)"] = rounding_off(model, None)
    rows = []
    for name, variant in variants.items():
        out = run_any(variant, task.test)
        hits = (out.argmax(1) == fp32.argmax(1)).astype(np.int64)
        rows.append([name, Scored.of(hits).text(), f"{float(np.mean((out - fp32) ** 2)):.2e}"])
    print("\nWhere the error comes from (GPTQ rounding; activation rounding switched off by group)")
    print(tabulate(rows, headers=["model", f"agreement, all {task.n_test}", "logits MSE"], tablefmt="github"))


if __name__ == "__main__":
    main()
