"""The Python API: one keyword-only function per CLI verb.

    import int8kit
    result = int8kit.quantize("model.onnx", "calib.npy", output_dir="out", th_method="kl", per_channel=True)
    print(result.int8_model, result.timings)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import onnx

from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.data.sources import KeepFirst, batches_from, model_input_specs
from int8kit.errors import ConfigError
from int8kit.evaluate.reference import ModelLike
from int8kit.graph.io import as_model, check_outputs, outputs_together, save_model
from int8kit.results import (
    UNSET, CalibrateResult, OptimizeResult, QuantizeResult, output_paths, run_config_of, write_outputs,
)
from int8kit.graph.model_checks import check_float_model
from int8kit.graph.optimize import optimize_model
from int8kit.importers.convert import convert_model as convert  # the `convert` verb: one signature, kept there
from int8kit.config import CalibOptions, QuantConfig, RunConfig, TuneOptions, split_options
from int8kit.preflight import check_layer_names, input_paths
from int8kit.pipeline import (
    StageInputs, collect_stats, latency_check, model_stem, open_data_for, run_quantize, source_model,
)
from int8kit.tune.bias_tuning import TUNING_BYTES

log = logging.getLogger(__name__)


def optimize(model: ModelLike, *, output: str | os.PathLike | None = None, no_fuse: Collection[str] = (),
             framework: str | None = None, weights: Any = None, input_shapes: Any = None) -> OptimizeResult:
    """Fold BatchNorm/affine layers, drop Identity/Dropout, fold constants (the manual's graph_transform).

    Writes ``output`` when given (atomically); the input file is never touched. ``framework``,
    ``weights``, ``input_shapes``: take another framework's model directly (see ``convert``).
    """
    check_outputs({"the output": output}, input_paths(model=model, weights=weights))
    optimized, log = optimize_model(as_model(source_model(model, framework, weights, input_shapes)), no_fuse=no_fuse)
    path = save_model(optimized, output) if output is not None else None
    return OptimizeResult(optimized, path, log)


def calibrate(
    model: ModelLike,
    data: Any,
    *,
    output: str | os.PathLike | None = None,
    no_fuse: Collection[str] = (),
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
    **options: Any,
) -> CalibrateResult:
    """One streaming pass over ``data``; statistics for every tensor any plan could quantize.

    ``options``: the fields of :class:`~int8kit.config.CalibOptions` (``bins``, ``iterations``,
    ``batch_size``). The model is optimized first (the statistics are keyed by the optimized
    graph, exactly as ``quantize`` sees it); ``output`` saves them for ``quantize(stats=...)``
    (``-dump_dist``). ``data`` may also be an image folder/list (with ``preprocess`` or
    ``preprocess_template``), an LMDB folder or a Caffe Data-layer prototxt (see
    ``int8kit.data.open.open_data``).
    """
    (calib,) = split_options(options, stages=(CalibOptions,), where="calibrate")
    calib_options = CalibOptions(**calib)
    check_outputs({"the statistics output": output}, input_paths(model=model, data=data, weights=weights))
    source = as_model(source_model(model, framework, weights, input_shapes))
    check_float_model(source)
    optimized, _ = optimize_model(source, no_fuse=no_fuse)
    data = open_data_for(optimized, data, preprocess, preprocess_template, strict)
    start = time.perf_counter()
    stats = collect_stats(optimized, data, calib_options, progress=progress)
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
    config: QuantConfig | RunConfig | str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = UNSET,
    output: str | os.PathLike | None = None,
    save_config: str | os.PathLike | None = None,
    dump_stats: str | os.PathLike | None = None,
    no_fuse: Collection[str] = (),
    progress: bool = True,
    check_latency: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
    **options: Any,
) -> QuantizeResult:
    """Optimize, calibrate (or load ``stats``), plan and emit a QDQ INT8 model plus its records.

    ``config``: a :class:`~int8kit.config.QuantConfig`, a :class:`~int8kit.config.RunConfig`, or
    the path of a ``save_config`` file (or of a ``<stem>_quant.json`` record) to replay.
    ``options``: any field of ``QuantConfig``, ``CalibOptions`` or ``TuneOptions`` by name
    (``th_method="mse"``, ``fp_layers=("conv_12",)``, ``bins=1024``, ``bias_tuning=32``); they
    change the ``config`` given. ``bins``: ``None`` is 2048, or with ``stats`` the statistics' own
    (fewer are summed from them exactly). A config file's ``iterations``/``batch_size`` apply only
    when calibrating from ``data``.

    Writes into ``output_dir`` (default ``int8kit-out``): ``<stem>_int8.onnx``,
    ``<stem>_fp32_optimized.onnx``, ``<stem>_quant.json``, ``<stem>_calibration_table.txt`` and
    ``<stem>_trt_calib.cache``, replaced as one set; ``output="x.onnx"`` writes the INT8 model
    alone; ``output_dir=None`` writes nothing (``result.model`` is the INT8 ModelProto either way).
    ``save_config`` writes the resolved configuration of the run (every option, versioned).
    ``check_latency``: time INT8 against FP32 at the end (``result.speed``; a warning names what
    costs time when INT8 is not faster).
    """
    if data is None and stats is None:
        raise ConfigError("quantize needs calibration data (--data) or saved statistics (--stats); got neither.")
    base = run_config_of(config)
    quant, calib, tune = split_options(options)
    run = RunConfig(base.quant.replace(**quant), base.calib.replace(**calib), base.tune.replace(**tune))
    if stats is not None and not isinstance(stats, (str, os.PathLike, Stats)):
        raise ConfigError(f"stats must be a statistics file path or Stats, got {stats!r}.")
    names = output_paths(output_dir, output, model_stem(model))
    config_path = config if isinstance(config, (str, os.PathLike)) else None
    check_outputs({"--dump-stats": dump_stats, "--save-config": save_config, **{f"output '{p.name}'": p for p in names.values()}},
                  input_paths(model=model, data=data, stats=stats, overrides=options.get("overrides"), config=config_path,
                              weights=weights))
    given = StageInputs(stats=stats, data=data, explicit_calib=calib, dump_stats=dump_stats)
    together = names.values() if len(names) > 1 else ()  # a lone model file is renamed into place by itself
    with outputs_together(together):  # one unit: a failure or kill at any point keeps the previous complete set
        result = run_quantize(model, given, run, names, save_config=save_config, no_fuse=no_fuse, progress=progress,
                         preprocess=preprocess, preprocess_template=preprocess_template, strict=strict,
                         framework=framework, weights=weights, input_shapes=input_shapes)
    if check_latency:
        result.speed = latency_check(result, data, preprocess, preprocess_template, strict)
    return result


def evaluate(
    fp32_model: ModelLike,
    int8_model: ModelLike,
    data: Any,
    *,
    labels: Any = None,
    output: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    runtime: str = "onnxruntime",
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
    metric: str | None = None,
    postprocess: str | None = None,
    profile: bool = False,
):
    """FP32 vs INT8 on the same data: accuracy, agreement, cosine, latency (an ``EvalResult``).

    ``metric`` (``top1``, ``top5``, ``agreement``, ``cosine``, ``map`` or ``module:Class``; docs/metrics.md)
    also scores both models on the task, with 95 % intervals and the paired drop (``result.task``);
    ``postprocess`` (``module:function``) turns raw outputs into boxes for ``map``.

    ``per_layer`` (or ``report``) also compares every tensor on up to 32 samples (``result.layers``).
    ``report`` writes a self-contained HTML report there; ``quant_json`` (default: the
    ``<stem>_quant.json`` beside a ``<stem>_int8.onnx``) and ``stats`` add clipping ranges and
    calibration histograms to it. ``runtime``: where both models run, ``onnxruntime`` or
    ``openvino`` (its default precision; ``pip install openvino``); the per-layer comparison always
    runs in onnxruntime, which can return any intermediate tensor. ``profile`` also asks the
    runtime's profiler where each model spends its time, per op type (``result.op_profile``).
    """
    from int8kit.evaluate.evaluator import LAYER_SAMPLES, Evaluator
    from int8kit.evaluate.tasks import make_metric

    if report is not None and quant_json is None:  # the record the report reads by default is an input too
        from int8kit.analysis.report import find_quant_json

        quant_json = find_quant_json(int8_model)
    check_outputs({"--report": report}, input_paths(fp32_model=fp32_model, int8_model=int8_model, data=data, labels=labels,
                                                  quant_json=quant_json, stats=stats, weights=weights))
    fp32_model = source_model(fp32_model, framework, weights, input_shapes)  # the original framework's files work too
    data = open_data_for(fp32_model, data, preprocess, preprocess_template, strict)
    # One evaluator: the FP32 reference (cached on disk) serves the outputs, the layers and the report.
    evaluator = Evaluator(fp32_model, data, labels=labels, output=output, batch_size=batch_size, threads=threads,
                          runtime=runtime, progress=progress)
    task = make_metric(metric, postprocess=postprocess) if metric is not None else None  # a bad spec fails before any pass
    result = evaluator.evaluate(int8_model, latency=latency, metric=task)
    feed = evaluator.latency_feed() if profile else None
    if feed is not None:
        from int8kit.evaluate.op_profile import profile_ops

        result.op_profile = dict(zip(("FP32", "INT8"), profile_ops([fp32_model, int8_model], feed, runtime=runtime)))
    if per_layer or report is not None:
        from int8kit.analysis.layerwise import layer_errors

        result.layers = layer_errors(fp32_model, int8_model, None, max_samples=LAYER_SAMPLES, evaluator=evaluator,
                                     progress=progress)
    if report is not None:
        from int8kit.analysis.report import report_for_models

        report_for_models(report, fp32_model, eval_result=result, layer_errors=result.layers, int8_model=int8_model,
                          quant_json=quant_json, stats=stats, evaluator=evaluator, max_samples=LAYER_SAMPLES)
    return result


AUTO_SUFFIXES = ("_config.json", "_search.json", "_search.txt", "_report.html")


def auto(
    model: ModelLike,
    calib_data: Any,
    test_data: Any,
    *,
    labels: Any = None,
    output_dir: str | os.PathLike | None = UNSET,
    config: QuantConfig | RunConfig | str | os.PathLike | None = None,
    postprocess: str | None = None,
    no_fuse: Collection[str] = (),
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
    **options: Any,
):
    """Search for the fastest INT8 model whose task metric stays within the budget (the manual's auto_calib).

    One calibration pass over ``calib_data``; every candidate is re-planned from it, scored on the
    first half of ``test_data`` and timed against FP32; the chosen one is reported on the second
    half. ``options``: the fields of :class:`~int8kit.config.search.SearchOptions` (``metric``,
    ``accept_drop``, ``relative``, ``fp32_score``, ``full``, ...) and of ``QuantConfig`` /
    ``CalibOptions`` (the base configuration the candidates change; ``config`` replays a file).
    ``labels``: one per test sample (top1/top5). ``postprocess``: ``module:function`` turning raw
    outputs into what a ``module:Class`` metric reads.

    Writes into ``output_dir`` as one set: the five files of ``quantize`` for the chosen model,
    ``<stem>_config.json`` (replay it with ``quantize --config``), ``<stem>_search.json`` and
    ``<stem>_search.txt`` (every trial) and ``<stem>_report.html``. A rerun with the same arguments
    reads the search log there and scores no candidate twice; Ctrl-C writes the best trial so far.
    Returns an ``int8kit.auto.SearchResult`` (``.files``: what was written).
    """
    from int8kit.auto import SearchLog, make_context, run_key, run_search
    from int8kit.config.search import SearchOptions

    search_fields, rest = _split_search_options(options)
    search = SearchOptions(**search_fields)
    quant, calib, tune = split_options(rest, where="auto")
    if tune:
        raise ConfigError(f"auto decides bias tuning itself (full mode tries it); drop {', '.join(sorted(tune))}.")
    base = run_config_of(config)
    run = RunConfig(base.quant.replace(**quant), base.calib.replace(**calib), base.tune)
    stem = model_stem(model)
    names = output_paths(output_dir, None, stem)
    if names:
        folder = next(iter(names.values())).parent
        names.update({s: folder / f"{stem}{s}" for s in AUTO_SUFFIXES})
    check_outputs({f"output '{p.name}'": p for p in names.values()},
                  input_paths(model=model, calib_data=calib_data, test_data=test_data, labels=labels, weights=weights,
                              config=config if isinstance(config, (str, os.PathLike)) else None))
    source = as_model(source_model(model, framework, weights, input_shapes))
    check_float_model(source)
    optimized, opt_log = optimize_model(source, no_fuse=no_fuse)
    check_layer_names(source, optimized, run.quant)

    opened = open_data_for(optimized, calib_data, preprocess, preprocess_template, strict)
    tuning = None
    if search.full and search.bias_tuning_samples:  # bias tuning reads the first samples again
        opened = tuning = KeepFirst(batches_from(opened, model_input_specs(optimized), batch_size=run.calib.batch_size,
                                                 iterations=run.calib.iterations), search.bias_tuning_samples,
                                    max_bytes=TUNING_BYTES, what="the bias tuning samples")
    stats = collect_stats(optimized, opened, run.calib, progress=progress)
    run = RunConfig(run.quant, run.calib.replace(bins=stats.bins), run.tune)
    test = open_data_for(optimized, test_data, preprocess, preprocess_template, strict)
    ctx, metric = make_context(optimized, stats, test, run.quant, search, labels=labels, postprocess=postprocess,
                               tuning_batches=tuning.kept if tuning is not None else None,
                               batch_size=run.calib.batch_size, progress=progress)
    from int8kit.evaluate.store import data_fingerprint

    key = run_key(optimized, data_fingerprint(calib_data) or repr(calib_data), data_fingerprint(test_data) or repr(test_data),
                  ctx.scorer.evaluator.labels, run.quant, search, metric=metric, postprocess=postprocess,
                  calib_options=run.calib.to_dict())
    journal = names["_search.json"].with_name(f".{stem}_search.journal.json") if names else None
    search_log = SearchLog.resume([p for p in (journal, names.get("_search.json")) if p is not None], key)
    result = run_search(ctx, search_log, full=search.full, metric=metric, journal=journal, progress=progress)
    result.files = _write_auto(result, names, stem, optimized, opt_log, run, stats) if names else {}
    if journal is not None:
        journal.unlink(missing_ok=True)  # the search log in the set holds every trial now
    return result


def _split_search_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from dataclasses import fields

    from int8kit.config.search import SearchOptions

    own = {f.name for f in fields(SearchOptions)}
    return {k: v for k, v in options.items() if k in own}, {k: v for k, v in options.items() if k not in own}


def _write_auto(result: Any, names: dict[str, Path], stem: str, optimized: onnx.ModelProto, opt_log: list[str],
                run: RunConfig, stats: Stats) -> dict[str, Path]:
    """The chosen model's set (the quantize files, its configuration, the search log and the report), as one unit."""
    from int8kit.auto.report import report_html, write_search_files
    from int8kit.graph.io import write_text_atomic

    built = result.built
    chosen_run = RunConfig(built.config, run.calib, TuneOptions(bias_tuning=result.chosen.bias_tuning,
                                                                weight_rounding=result.chosen.weight_rounding))
    html = report_html(result, optimized, model_name=stem, stats=stats)  # before staging: it reads its own temp file back
    quantized = QuantizeResult(built.model, optimized, built.plan, chosen_run, optimize_log=opt_log, bias_tuned=built.bias_tuned)
    with outputs_together(names.values()):
        write_outputs(quantized, {s: p for s, p in names.items() if s not in AUTO_SUFFIXES}, stem, names["_config.json"])
        write_search_files(result, names["_search.json"], names["_search.txt"])
        write_text_atomic(names["_report.html"], html)
    return dict(names)


def analyze(
    fp32_model: ModelLike,
    int8_model: ModelLike,
    data: Any,
    *,
    labels: Any = None,
    quant_json: str | os.PathLike | None = None,
    stats: str | os.PathLike | Stats | None = None,
    report: str | os.PathLike | None = None,
    samples: int = 32,
    output: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    latency: bool = False,
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
    framework: str | None = None,
    weights: Any = None,
    input_shapes: Any = None,
):
    """Where the INT8 model's error comes from: every INT8 layer's accumulated error (the INT8
    model as it runs) and isolated error (only that layer quantized: weights only, inputs only,
    both, and carried to the model's output), on the first ``samples`` samples of ``data``; the
    FP32-vs-INT8 summary on all of them. Returns an ``analysis.analyze.AnalyzeResult``
    (``.to_table()``, ``.ranking()``, ``.to_dict()``).

    ``quant_json``: the quantize record (default: ``<stem>_quant.json`` beside ``<stem>_int8.onnx``;
    it gives the scales and why each tensor got its method). ``report``: write a self-contained
    HTML report there; ``stats`` (calibration statistics) draws its histograms from calibration,
    otherwise from the analysed samples. Other arguments mean what they mean for ``evaluate``.
    """
    from int8kit.analysis.analyze import run_analysis
    from int8kit.analysis.report import find_quant_json
    from int8kit.evaluate.evaluator import Evaluator

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"analyze samples is {samples!r}; expected a whole number >= 1 (the default is 32).")
    if quant_json is None:
        quant_json = find_quant_json(int8_model)
    check_outputs({"--report": report}, input_paths(fp32_model=fp32_model, int8_model=int8_model, data=data, labels=labels,
                                                  quant_json=quant_json, stats=stats, weights=weights))
    fp32 = as_model(source_model(fp32_model, framework, weights, input_shapes))
    optimized, _ = optimize_model(fp32)
    named = {"fp32_model": fp32_model, "int8_model": int8_model, "data": data, "labels": labels, "quant_json": quant_json,
             "stats": stats, "preprocess": preprocess or preprocess_template}
    options = {k: os.fspath(v) if isinstance(v, (str, os.PathLike)) else ("in memory" if v is not None else None)
               for k, v in named.items()}
    data = open_data_for(fp32, data, preprocess, preprocess_template, strict)
    evaluator = Evaluator(fp32, data, labels=labels, output=output, batch_size=batch_size, threads=threads, progress=progress)
    result = run_analysis(fp32, optimized, int8_model, evaluator, quant_json=quant_json, samples=samples,
                          latency=latency, progress=progress, options=options)
    if report is not None:
        from int8kit.analysis.analyze_report import worst_inputs, write_analyze_report
        from int8kit.analysis.layerwise import layer_histograms

        note = None
        if stats is not None:
            loaded = stats if isinstance(stats, Stats) else Stats.load(stats, model_id=model_fingerprint(optimized))
            hists = {n: t.hist for n, t in loaded.tensors.items()}
        else:
            hists = layer_histograms(evaluator, worst_inputs(result), max_samples=samples)
            note = (f"No calibration statistics were given (--stats), so these histograms show the {samples} analysed "
                    "samples; the red lines are the ranges the quant record holds.")
        result.report = write_analyze_report(report, result, hists=hists, hist_note=note)
    return result
