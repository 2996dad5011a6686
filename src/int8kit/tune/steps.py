"""The steps between a plan and its INT8 model, in their one order: GPTQ weight rounding and BN
update change the plan, emit writes the model, bias tuning corrects its INT32 biases. ``quantize``
and the automatic search both go through here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from int8kit.config import TuneOptions
from int8kit.emit.qdq import emit_qdq
from int8kit.plan.types import QuantPlan
from int8kit.tune.bias_tuning import tune_biases
from int8kit.tune.bn_update import update_bn
from int8kit.tune.weight_rounding import RoundingMemo, gptq_rounding

log = logging.getLogger("int8kit.tune")


@dataclass
class Tuned:
    """The INT8 model, the plan it was emitted from, how many convs bias tuning changed, and the
    seconds of each step that ran."""

    model: onnx.ModelProto
    plan: QuantPlan
    bias_tuned: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def tune_and_emit(fp32: onnx.ModelProto, quant_plan: QuantPlan, batches: list[dict[str, np.ndarray]] | None,
                  tune: TuneOptions, *, bias_correction: bool, progress: bool = False,
                  rounding_memo: RoundingMemo | None = None) -> Tuned:
    """Emit ``quant_plan`` for ``fp32`` after the tuning steps ``tune`` asks for, on ``batches``
    (calibration samples; without them the tuning steps are skipped)."""
    timings: dict[str, float] = {}
    if batches and tune.weight_rounding == "gptq":
        start = time.perf_counter()
        quant_plan, rounding = gptq_rounding(fp32, quant_plan, batches, bias_correction=bias_correction,
                                             progress=progress, memo=rounding_memo)
        log.info("GPTQ rounding: %d layers re-rounded", sum(rounding.gptq[k] < rounding.nearest[k] for k in rounding.gptq))
        timings["weight_rounding"] = time.perf_counter() - start
    if batches and tune.update_bn:
        start = time.perf_counter()
        quant_plan, report = update_bn(fp32, quant_plan, batches, iterations=tune.bn_update_iterations,
                                       fraction=tune.bn_moving_average_fraction, progress=progress)
        log.info("BN update: %d convs re-normalized", report.convs)
        if tune.bn_dump_dir is not None:
            report.save(tune.bn_dump_dir)
        timings["update_bn"] = time.perf_counter() - start
    start = time.perf_counter()
    model = emit_qdq(fp32, quant_plan)
    timings["emit"] = time.perf_counter() - start
    tuned = 0
    if batches and tune.bias_tuning:
        start = time.perf_counter()
        kept = sum(len(next(iter(b.values()))) for b in batches)
        if kept < tune.bias_tuning:
            log.warning("--bias-tuning asked %d samples but the data holds %d; tuning on those", tune.bias_tuning, kept)
        model, tuned = tune_biases(fp32, model, quant_plan, batches, progress=progress)
        timings["bias_tuning"] = time.perf_counter() - start
    return Tuned(model, quant_plan, tuned, timings)
