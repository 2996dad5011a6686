"""The stages behind the API verbs: where a model and its data come from, the quantize pipeline
(optimize, calibrate or load statistics, plan, the tuning steps, emit, write) and its latency check.
``int8kit.api`` holds one keyword-only function per verb on top of these."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from int8kit.calib.collect import collect
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.config import CalibOptions, RunConfig, TuneOptions
from int8kit.data.sources import KeepFirst, batches_from, model_input_specs
from int8kit.errors import ConfigError
from int8kit.evaluate.reference import ModelLike
from int8kit.graph.io import as_model
from int8kit.graph.model_checks import check_float_model
from int8kit.graph.optimize import optimize_model
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.preflight import check_layer_names
from int8kit.results import QuantizeResult, write_outputs
from int8kit.tune.bias_tuning import TUNING_BYTES
from int8kit.tune.bn_update import bn_update_samples
from int8kit.tune.steps import tune_and_emit
from int8kit.tune.weight_rounding import rounding_samples

log = logging.getLogger("int8kit.api")


def model_stem(model: ModelLike) -> str:
    if not isinstance(model, (str, os.PathLike)):  # a ModelProto or an in-memory framework model
        return "model"
    text = str(model)
    stem = Path(text.rpartition(":")[2] if ":" in text and not Path(text).exists() else text).stem  # module:factory
    return stem[: -len(".prototxt")] if stem.endswith(".prototxt") else stem


def source_model(model: ModelLike, framework: str | None, weights: Any, input_shapes: Any) -> ModelLike:
    """An ONNX model as given; another framework's files (Caffe, Darknet, PyTorch, ...) converted first."""
    plain = framework in (None, "onnx") and weights is None and input_shapes is None
    if isinstance(model, onnx.ModelProto) or (plain and str(model).lower().endswith(".onnx")):
        return model
    from int8kit.importers import load_any_model

    return load_any_model(model, framework=framework, weights=weights, input_shapes=input_shapes)


def latency_check(result: QuantizeResult, data: Any, preprocess: str | None, template: str | None, strict: bool):
    """INT8 vs FP32 latency on one sample (``None`` when no sample can be had); never fails the run."""
    from int8kit.analysis.speed import check_speed, timing_feed, timing_runtime

    target = result.config.target
    runtime = timing_runtime(target)
    if runtime is None:
        log.info("latency check skipped: the %s form is timed in %s, which is not installed here", target, target)
        return None
    try:
        feed = timing_feed(result.optimized_model, None if data is None else (
            lambda: open_data_for(result.optimized_model, data, preprocess, template, strict)))
        if feed is None:
            log.info("latency check skipped: no sample to time (dynamic input sizes and no re-readable data)")
            return None
        speed = check_speed(result.optimized_model, result.model, result.plan, feed, runtime=runtime)
    except Exception as exc:  # timing is advice: a runtime that cannot load one of the models says so, it does not fail the run
        log.warning("latency check skipped: %s", exc)
        return None
    if not speed.faster:
        log.warning(speed.advice())
    return speed


@dataclass
class StageInputs:
    """Where a quantize run's statistics come from, and which calibration options were given explicitly."""

    stats: Any
    data: Any
    explicit_calib: dict[str, Any]
    dump_stats: Any

    def check(self, tune: TuneOptions) -> None:
        """Refuse combinations where an option would be silently ignored."""
        if self.stats is None:
            return
        if self.data is None and tune.bias_tuning:
            raise ConfigError("--bias-tuning runs the INT8 model on calibration samples; pass --data as well as --stats.")
        if self.data is None and tune.update_bn:
            raise ConfigError("--update-bn runs the quantized model on calibration samples; pass --data as well as --stats.")
        if self.data is None and tune.weight_rounding == "gptq":
            raise ConfigError("--weight-rounding gptq reads the layers' inputs on calibration samples; pass --data as well as --stats.")
        reads = tune.bias_tuning or tune.update_bn or tune.weight_rounding == "gptq"
        if self.data is not None and not reads:
            raise ConfigError("--data is not read when --stats is given (the saved statistics replace the calibration pass; "
                              "only --bias-tuning reads samples again); drop one of them.")
        if self.explicit_calib.get("iterations") is not None and not reads:
            raise ConfigError("--iterations chooses the calibration samples, but --stats skips the calibration pass; drop --iterations.")
        if self.dump_stats is not None:
            raise ConfigError("--dump-stats saves a new calibration pass, but --stats skips it; drop --dump-stats.")


def run_quantize(model: ModelLike, given: StageInputs, run: RunConfig, names: dict[str, Path], *, save_config: Any,
              no_fuse: Collection[str], progress: bool, preprocess: str | None, preprocess_template: str | None,
              strict: bool, framework: str | None, weights: Any, input_shapes: Any) -> QuantizeResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    source = source_model(model, framework, weights, input_shapes)
    if source is not model:  # converted from another framework
        timings["convert"] = time.perf_counter() - start
        start = time.perf_counter()
    source = as_model(source)
    check_float_model(source)
    optimized, opt_log = optimize_model(source, no_fuse=no_fuse)
    timings["optimize"] = time.perf_counter() - start
    check_layer_names(source, optimized, run.quant)  # now, not after the calibration pass
    given.check(run.tune)

    data, tuning = given.data, None
    keep = max(run.tune.bias_tuning, bn_update_samples(run.tune), rounding_samples(run.tune))
    if data is not None and keep:  # the first samples are read again after planning
        data = tuning = KeepFirst(batches_from(open_data_for(optimized, data, preprocess, preprocess_template, strict),
                                               model_input_specs(optimized), batch_size=run.calib.batch_size,
                                               iterations=run.calib.iterations), keep, max_bytes=TUNING_BYTES,
                                  what=f"--bias-tuning {run.tune.bias_tuning}" if run.tune.bias_tuning else "the tuning samples")
    start = time.perf_counter()
    if given.stats is not None:
        stats = given.stats if isinstance(given.stats, Stats) else Stats.load(given.stats, model_id=model_fingerprint(optimized))
        stats = stats.with_bins(run.calib.bins) if run.calib.bins is not None else stats
        timings["load_stats"] = time.perf_counter() - start
        if tuning is not None:
            tuning.fill()
    else:
        stats = collect_stats(optimized, open_data_for(optimized, data, preprocess, preprocess_template, strict), run.calib,
                         progress=progress)
        timings["calibrate"] = time.perf_counter() - start
        if given.dump_stats is not None:
            stats.save(given.dump_stats)
    # the histograms are as they were calibrated (or summed down); the record says so
    run = RunConfig(run.quant, run.calib.replace(bins=stats.bins), run.tune)

    start = time.perf_counter()
    quant_plan = plan(optimized, stats, run.quant)
    timings["plan"] = time.perf_counter() - start
    tuned = tune_and_emit(optimized, quant_plan, tuning.kept if tuning is not None else None, run.tune,
                          bias_correction=run.quant.bias_correction, progress=progress)
    timings.update(tuned.timings)
    int8, quant_plan, bias_tuned = tuned.model, tuned.plan, tuned.bias_tuned
    result = QuantizeResult(int8, optimized, quant_plan, run, timings=timings, optimize_log=opt_log, bias_tuned=bias_tuned)
    return write_outputs(result, names, model_stem(model), save_config)


def open_data_for(model: ModelLike, data: Any, preprocess: str | None, template: str | None, strict: bool) -> Any:
    """Image folders/lists, LMDBs and Caffe Data layers become sample sources; other data passes through."""
    if preprocess is None and template is None and (
        not isinstance(data, (str, os.PathLike)) or Path(data).suffix.lower() in (".npy", ".npz")
    ):
        return data
    from int8kit.data.open import open_data
    from int8kit.data.sources import model_input_specs

    specs = model_input_specs(as_model(model))
    return open_data(data, preprocess=preprocess, preprocess_template=template, strict=strict,
                     input_shapes=[s.shape for s in specs], input_names=[s.name for s in specs])


def collect_stats(optimized: onnx.ModelProto, data: Any, calib: CalibOptions, progress: bool) -> Stats:
    """Tap exactly the tensors some plan could quantize, so one pass serves every re-plan."""
    return collect(optimized, data, tensors=candidate_tensors(optimized), bins=calib.histogram_bins,
                   iterations=calib.iterations, batch_size=calib.batch_size, progress=progress)
