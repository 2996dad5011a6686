"""onnxruntime sessions with the options int8kit needs, and clear errors."""

from __future__ import annotations

import os

import onnx
import onnxruntime as ort

from int8kit.errors import ModelError


def make_session(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
    optimize: bool = True,
    reduce_early: bool = False,
) -> ort.InferenceSession:
    """Create an inference session on a model or path.

    ``threads`` sets intra-op threads (``None``: onnxruntime's default, all cores). ``providers``
    defaults to CPU. ``optimize=False`` disables graph fusions (used when tapping intermediates).
    ``reduce_early`` is for models with side branches that reduce tapped tensors (calibration,
    bias tuning): onnxruntime's default order runs those branches after the whole network, so
    every tensor they read stays alive to the end; its priority order runs them as soon as they
    can (PP-OCRv4 det at 640x640, one sample: +486 MB -> +121 MB, and 20% faster).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if reduce_early:
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        name = "the model" if isinstance(model, onnx.ModelProto) else f"model '{model}'"
        raise ModelError(
            f"onnxruntime cannot load {name} ({str(exc).splitlines()[0][:300]}); "
            "expected a valid ONNX model with operators onnxruntime supports."
        ) from None
