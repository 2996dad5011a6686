"""Which INT8 layers hurt most: the order in which the full search floats them, and the layers a
missed budget names. The isolated error of each layer comes from ``analysis.sensitivity`` (the
layer alone quantized, fed the FP32 tensors the evaluator's layer reference holds; no model is
quantized and evaluated per layer)."""

from __future__ import annotations

import onnx

from int8kit.analysis.sensitivity import layer_sensitivity
from int8kit.analysis.sensitivity import sensitivity_ranking as ranked_names
from int8kit.evaluate.evaluator import Evaluator
from int8kit.plan.types import QuantPlan

# the isolated ranking: each layer's own relative error at its output. "isolated_output"
# (that error carried to the scored output) costs one run of the rest of the model per layer: on
# EfficientNet-Lite0 46 s against 14 s (shared 2 cores), and floating its top 16 layers scored no
# better (agreement 0.964 against 0.956 on 250 samples, within each other's intervals)
RANK_BY = "isolated"


def sensitivity_ranking(optimized: onnx.ModelProto, quant_plan: QuantPlan, layers: list[str], evaluator: Evaluator,
                        *, by: str = RANK_BY) -> list[tuple[str, float]]:
    """``layers`` (compute node names the plan runs in INT8) with their relative error, most
    sensitive first; layers the analysis cannot run alone come last."""
    sens = layer_sensitivity(optimized, quant_plan, evaluator, accumulated=False, propagate=by == "isolated_output")
    errors = {s.layer: getattr(s, by) for s in sens}
    wanted = set(layers)
    out = [(name, float(errors[name].relative_error)) for name in ranked_names(sens, by=by) if name in wanted]
    seen = {name for name, _ in out}
    return out + [(name, 0.0) for name in layers if name not in seen]
