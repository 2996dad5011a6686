"""The Python API: one keyword-only function per CLI verb.

    import int8kit
    result = int8kit.quantize("model.onnx", "calib.npy", output_dir="out", th_method="kl", per_channel=True)
    print(result.int8_model, result.timings)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from int8kit.calib.collect import collect
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.data.sources import KeepFirst, batches_from, model_input_specs
from int8kit.emit.bias_tuning import tune_biases
from int8kit.emit.qdq import emit_qdq
from int8kit.emit.records import tensor_order, write_calibration_table, write_quant_json, write_tensorrt_cache
from int8kit.errors import ConfigError
from int8kit.graph.io import as_model, check_outputs, outputs_together, save_model
from int8kit.graph.model_checks import check_float_model
from int8kit.graph.optimize import optimize_model
from int8kit.importers.convert import convert_model as convert  # the `convert` verb: one signature, kept there
from int8kit.plan.config import QuantConfig, as_overrides
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.plan.types import QuantPlan
from int8kit.preflight import check_layer_names, check_methods, input_paths

ModelLike = onnx.ModelProto | str | os.PathLike
log = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    """What ``optimize`` did."""

    model: onnx.ModelProto
    path: Path | None
    log: list[str]


@dataclass
class CalibrateResult:
    """Statistics of one calibration pass, and where they were saved."""

    stats: Stats
    path: Path | None
    seconds: float


@dataclass
class QuantizeResult:
    """Paths of everything ``quantize`` wrote, the plan, and how long each stage took."""

    int8_model: Path
    fp32_optimized_model: Path
    quant_json: Path
    calibration_table: Path
    tensorrt_cache: Path
    plan: QuantPlan
    config: QuantConfig
    timings: dict[str, float] = field(default_factory=dict)
    optimize_log: list[str] = field(default_factory=list)
    bias_tuned: int = 0  # convs whose INT32 bias --bias-tuning moved

    def parameters(self) -> dict[str, dict[str, Any]]:
        """Per-tensor quantization parameters as plain Python values."""
        out = {}
        for name, tq in self.plan.tensors.items():
            dtype, zero_point = tq.stored(self.plan.signed_storage)  # as the model holds them
            out[name] = {
                "kind": tq.kind,
                "dtype": dtype,
                "scale": tq.scale.tolist(),
                "zero_point": zero_point.tolist(),
                "axis": tq.axis,
                "method": tq.method,
                "threshold": tq.threshold,
                "min": tq.min,
                "max": tq.max,
            }
        return out


def _stem(model: ModelLike) -> str:
    if not isinstance(model, (str, os.PathLike)):  # a ModelProto or an in-memory framework model
        return "model"
    text = str(model)
    stem = Path(text.rpartition(":")[2] if ":" in text and not Path(text).exists() else text).stem  # module:factory
    return stem[: -len(".prototxt")] if stem.endswith(".prototxt") else stem


def _source(model: ModelLike, framework: str | None, weights: Any, input_shapes: Any) -> ModelLike:
    """An ONNX model as given; another framework's files (Caffe, Darknet, PyTorch, ...) converted first."""
    plain = framework in (None, "onnx") and weights is None and input_shapes is None
    if isinstance(model, onnx.ModelProto) or (plain and str(model).lower().endswith(".onnx")):
        return model
    from int8kit.importers import load_any_model

    return load_any_model(model, framework=framework, weights=weights, input_shapes=input_shapes)


def optimize(model: ModelLike, *, output: str | os.PathLike | None = None, no_fuse: Collection[str] = (),
             framework: str | None = None, weights: Any = None, input_shapes: Any = None) -> OptimizeResult:
    """Fold BatchNorm/affine layers, drop Identity/Dropout, fold constants (the manual's graph_transform).

    Writes ``output`` when given (atomically); the input file is never touched. ``framework``,
    ``weights``, ``input_shapes``: take another framework's model directly (see ``convert``).
    """
    check_outputs({"the output": output}, input_paths(model=model, weights=weights))
    optimized, log = optimize_model(as_model(_source(model, framework, weights, input_shapes)), no_fuse=no_fuse)
    path = save_model(optimized, output) if output is not None else None
    return OptimizeResult(optimized, path, log)


def calibrate(
    model: ModelLike,
    data: Any,
    *,
    output: str | os.PathLike | None = None,
    iterations: int | None = None,
    bins: int = 2048,
    batch_size: int | None = None,
    no_fuse: Collection[str] = (),
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
) -> CalibrateResult:
    """One streaming pass over ``data``; statistics for every tensor any plan could quantize.

    The model is optimized first (the statistics are keyed by the optimized graph, exactly as
    ``quantize`` sees it); ``output`` saves them for ``quantize(stats=...)`` (``-dump_dist``).
    ``data`` may also be an image folder/list (with ``preprocess`` or ``preprocess_template``),
    an LMDB folder or a Caffe Data-layer prototxt (see ``int8kit.data.open.open_data``).
    """
    check_outputs({"the statistics output": output}, input_paths(model=model, data=data, weights=weights))
    source = as_model(_source(model, framework, weights, input_shapes))
    check_float_model(source)
    optimized, _ = optimize_model(source, no_fuse=no_fuse)
    QuantConfig(bins=bins)  # validates bins with the same message as quantize
    data = _open_data(optimized, data, preprocess, preprocess_template, strict)
    start = time.perf_counter()
    stats = _collect(optimized, data, bins=bins, iterations=iterations, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    path = None
    if output is not None:
        path = Path(output)
        stats.save(path)
    return CalibrateResult(stats, path, seconds)


def quantize(
    model: ModelLike,
    data: Any = None,
    *,
    stats: str | os.PathLike | Stats | None = None,
    output_dir: str | os.PathLike = "int8kit-out",
    th_method: str = "kl",
    th_params: Mapping[str, Any] | None = None,
    method_rules: bool = True,
    per_channel: bool = True,
    activation_offset: bool = False,
    bitwidth: int = 8,
    bins: int | None = None,
    conv_group: bool = False,
    fold_concat_scale: bool = False,
    accuracy_opt: bool = False,
    bias_correction: bool = True,
    channel_scales: bool = True,
    integer_hardswish: bool = True,
    bias_tuning: int = 0,
    stem_float: bool = True,
    signed_activations: bool = False,
    outlier_ratio: float = 2.0,
    skew_ratio: float = 0.5,
    fp_inputs: Collection[str] = (),
    fp_outputs: Collection[str] = (),
    fp_blocks: Collection[str] = (),
    fp_layers: Collection[str] = (),
    fp_op_types: Collection[str] = (),
    overrides: str | os.PathLike | Mapping[str, Any] | None = None,
    iterations: int | None = None,
    batch_size: int | None = None,
    no_fuse: Collection[str] = (),
    dump_stats: str | os.PathLike | None = None,
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
) -> QuantizeResult:
    """Optimize, calibrate (or load ``stats``), plan and emit a QDQ INT8 model plus its records.

    ``bins``: histogram bins per side; ``None``: 2048, or with ``stats`` the statistics' own (fewer
    are summed from them exactly).

    Writes into ``output_dir``: ``<stem>_int8.onnx``, ``<stem>_fp32_optimized.onnx``,
    ``<stem>_quant.json``, ``<stem>_calibration_table.txt`` and ``<stem>_trt_calib.cache``.
    """
    if data is None and stats is None:
        raise ConfigError("quantize needs calibration data (--data) or saved statistics (--stats); got neither.")
    config = QuantConfig(
        th_method=th_method,
        th_params=dict(th_params) if isinstance(th_params, Mapping) else (th_params or {}),
        method_rules=method_rules,
        bins=2048 if bins is None else bins,
        per_channel=per_channel,
        activation_offset=activation_offset,
        bitwidth=bitwidth,
        conv_group=conv_group,
        fold_concat_scale=fold_concat_scale,
        accuracy_opt=accuracy_opt,
        bias_correction=bias_correction,
        channel_scales=channel_scales,
        integer_hardswish=integer_hardswish,
        bias_tuning=bias_tuning,
        stem_float=stem_float,
        signed_activations=signed_activations,
        outlier_ratio=outlier_ratio,
        skew_ratio=skew_ratio,
        fp_inputs=fp_inputs,
        fp_outputs=fp_outputs,
        fp_blocks=fp_blocks,
        fp_layers=fp_layers,
        fp_op_types=fp_op_types,
        overrides=as_overrides(overrides),
    )
    check_methods(config)
    if not isinstance(output_dir, (str, os.PathLike)) or (stats is not None and not isinstance(stats, (str, os.PathLike, Stats))):
        raise ConfigError(f"output_dir must be a folder path and stats a statistics file path or Stats, got {output_dir!r} and {stats!r}.")
    out, stem = Path(output_dir), _stem(model)
    names = {s: out / f"{stem}{s}" for s in ("_int8.onnx", "_fp32_optimized.onnx", "_quant.json", "_calibration_table.txt", "_trt_calib.cache")}
    check_outputs({"--dump-stats": dump_stats, **{f"output '{p.name}'": p for p in names.values()}},
                  input_paths(model=model, data=data, stats=stats, overrides=overrides, weights=weights))
    with outputs_together():  # an error or Ctrl-C midway leaves none of the outputs, not some
        return _quantize(model, data, config, names, stats=stats, rebin=bins is not None, iterations=iterations,
                         batch_size=batch_size, no_fuse=no_fuse, dump_stats=dump_stats, progress=progress, preprocess=preprocess,
                         preprocess_template=preprocess_template, strict=strict, framework=framework, weights=weights,
                         input_shapes=input_shapes)


def _quantize(model: ModelLike, data: Any, config: QuantConfig, names: dict[str, Path], *, stats: Any, rebin: bool,
              iterations: int | None, batch_size: int | None, no_fuse: Collection[str], dump_stats: Any, progress: bool, preprocess: str | None,
              preprocess_template: str | None, strict: bool, framework: str | None, weights: Any, input_shapes: Any
              ) -> QuantizeResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    source = _source(model, framework, weights, input_shapes)
    if source is not model:  # converted from another framework
        timings["convert"] = time.perf_counter() - start
        start = time.perf_counter()
    source = as_model(source)
    check_float_model(source)
    optimized, opt_log = optimize_model(source, no_fuse=no_fuse)
    timings["optimize"] = time.perf_counter() - start
    check_layer_names(source, optimized, config)  # now, not after the calibration pass

    if stats is not None and data is None and config.bias_tuning:
        raise ConfigError("--bias-tuning runs the INT8 model on calibration samples; pass --data as well as --stats.")
    if stats is not None and data is not None and not config.bias_tuning:
        raise ConfigError("--data is not read when --stats is given (the saved statistics replace the calibration pass; "
                          "only --bias-tuning reads samples again); drop one of them.")
    if stats is not None and iterations is not None and not config.bias_tuning:
        raise ConfigError("--iterations chooses the calibration samples, but --stats skips the calibration pass; drop --iterations.")
    if stats is not None and dump_stats is not None:
        raise ConfigError("--dump-stats saves a new calibration pass, but --stats skips it; drop --dump-stats.")
    tuning: KeepFirst | None = None
    bias_tuned = 0
    if data is not None and config.bias_tuning:  # the first samples are read again after planning
        data = tuning = KeepFirst(batches_from(_open_data(optimized, data, preprocess, preprocess_template, strict),
                                               model_input_specs(optimized), batch_size=batch_size, iterations=iterations),
                                  config.bias_tuning)
    if stats is not None:
        start = time.perf_counter()
        stats = stats if isinstance(stats, Stats) else Stats.load(stats, model_id=model_fingerprint(optimized))
        stats = stats.with_bins(config.bins) if rebin else stats
        config.bins = stats.bins  # the histograms are as they were calibrated (or summed down); the record says so
        timings["load_stats"] = time.perf_counter() - start
        if tuning is not None:
            tuning.fill()
    else:
        data = _open_data(optimized, data, preprocess, preprocess_template, strict)
        start = time.perf_counter()
        stats = _collect(optimized, data, bins=config.bins, iterations=iterations, batch_size=batch_size, progress=progress)
        timings["calibrate"] = time.perf_counter() - start
        if dump_stats is not None:
            stats.save(dump_stats)

    start = time.perf_counter()
    quant_plan = plan(optimized, stats, config)
    timings["plan"] = time.perf_counter() - start
    start = time.perf_counter()
    int8 = emit_qdq(optimized, quant_plan)
    timings["emit"] = time.perf_counter() - start
    if tuning is not None:
        start = time.perf_counter()
        kept = sum(len(next(iter(b.values()))) for b in tuning.kept)
        if kept < config.bias_tuning:
            log.warning("--bias-tuning asked %d samples but the data holds %d; tuning on those", config.bias_tuning, kept)
        int8, bias_tuned = tune_biases(optimized, int8, quant_plan, tuning.kept, progress=progress)
        timings["bias_tuning"] = time.perf_counter() - start

    order = tensor_order(optimized)
    return QuantizeResult(
        int8_model=save_model(int8, names["_int8.onnx"]),
        fp32_optimized_model=save_model(optimized, names["_fp32_optimized.onnx"]),
        quant_json=write_quant_json(quant_plan, names["_quant.json"], model_name=_stem(model), config=config.to_dict(), order=order),
        calibration_table=write_calibration_table(quant_plan, names["_calibration_table.txt"], order=order),
        tensorrt_cache=write_tensorrt_cache(quant_plan, names["_trt_calib.cache"]),
        plan=quant_plan,
        config=config,
        timings=timings,
        optimize_log=opt_log,
        bias_tuned=bias_tuned,
    )


def evaluate(
    fp32_model: ModelLike,
    int8_model: ModelLike,
    data: Any,
    *,
    labels: Any = None,
    output: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    latency: bool = True,
    progress: bool = True,
    per_layer: bool = False,
    report: str | os.PathLike | None = None,
    quant_json: str | os.PathLike | None = None,
    stats: str | os.PathLike | Stats | None = None,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
):
    """FP32 vs INT8 on the same data: accuracy, agreement, cosine, latency (an ``EvalResult``).

    ``per_layer`` (or ``report``) also compares every tensor on up to 32 samples (``result.layers``).
    ``report`` writes a self-contained HTML report there; ``quant_json`` (default: the
    ``<stem>_quant.json`` beside a ``<stem>_int8.onnx``) and ``stats`` add clipping ranges and
    calibration histograms to it.
    """
    from int8kit.evaluation.compare import compare_models

    if report is not None and quant_json is None:  # the record the report reads by default is an input too
        from int8kit.evaluation.report import find_quant_json

        quant_json = find_quant_json(int8_model)
    check_outputs({"--report": report}, input_paths(fp32_model=fp32_model, int8_model=int8_model, data=data, labels=labels,
                                                  quant_json=quant_json, stats=stats, weights=weights))
    fp32_model = _source(fp32_model, framework, weights, input_shapes)  # the original framework's files work too
    data = _open_data(fp32_model, data, preprocess, preprocess_template, strict)
    keep: KeepFirst | None = None
    if (per_layer or report is not None) and isinstance(data, Iterator):  # a generator is read once: keep
        data = keep = KeepFirst(batches_from(data, model_input_specs(as_model(fp32_model)), batch_size=batch_size), 32)
    result = compare_models(
        fp32_model,
        int8_model,
        data,
        labels=labels,
        output=output,
        batch_size=batch_size,
        threads=threads,
        latency=latency,
        progress=progress,
    )
    if keep is not None:
        data = keep.kept  # the first samples again, for the per-layer pass
    if per_layer or report is not None:
        from int8kit.evaluation.layerwise import layer_errors

        result.layers = layer_errors(fp32_model, int8_model, data, max_samples=32, batch_size=batch_size, progress=progress)
    if report is not None:
        from int8kit.evaluation.report import report_for_models

        report_for_models(report, fp32_model, data, eval_result=result, layer_errors=result.layers, int8_model=int8_model,
                          quant_json=quant_json, stats=stats, batch_size=batch_size)
    return result


def _open_data(model: ModelLike, data: Any, preprocess: str | None, template: str | None, strict: bool) -> Any:
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


def _collect(optimized: onnx.ModelProto, data: Any, **kwargs: Any) -> Stats:
    """Tap exactly the tensors some plan could quantize, so one pass serves every re-plan."""
    return collect(optimized, data, tensors=candidate_tensors(optimized), **kwargs)
