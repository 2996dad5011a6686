"""AMCT's post-training calls with AMCT's names, argument names, order and defaults, over
int8kit's one quantizer (optimize -> streaming statistics -> plan -> emit)."""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from int8kit.amct import config_file as cf
from int8kit.amct.caffe_files import fused_caffe, uninplace
from int8kit.amct.cfg import read_cfg, settings_from_cfg
from int8kit.amct.graph import AmctGraph, Source, quantizable_layers
from int8kit.amct.logs import setup_logging
from int8kit.amct.outputs import output_names, write_set
from int8kit.amct.record import canonical, plan_to_record, read_record, record_to_plan
from int8kit.amct.session import CalibrationSession
from int8kit.config import read_json
from int8kit.errors import CalibrationError, ConfigError
from int8kit.graph.io import check_outputs, save_model as save_onnx, write_bytes_atomic, write_text_atomic
from int8kit.graph.ops import op_info
from int8kit.numerics import dequantize
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.plan.types import QuantPlan
from int8kit.tune.bn_update import update_bn
from int8kit.weights.arq import quantize_weight

_PROVIDERS = {"providers": ["CPUExecutionProvider"]}


def set_cpu_mode() -> None:
    """Run calibration sessions on the CPU (the default)."""
    log = setup_logging()
    _PROVIDERS["providers"] = ["CPUExecutionProvider"]
    log.info("AMCT mode: CPU")


def set_gpu_mode() -> None:
    """Run calibration sessions on onnxruntime's CUDA provider; a clear error when there is none."""
    import onnxruntime as ort

    log = setup_logging()
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(f"set_gpu_mode: this onnxruntime has no GPU provider (available: {', '.join(available)}); "
                          "install onnxruntime-gpu with a CUDA driver, or call set_cpu_mode().")
    _PROVIDERS["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    log.info("AMCT mode: GPU (CUDAExecutionProvider)")


def _default_settings(layers: dict[str, str], types: dict[str, str], batch_num: int, activation_offset: bool,
                      skip: list[str]) -> cf.AmctSettings:
    per_layer = {}
    for name in layers:
        wts = dict(cf.ARQ_DEFAULTS, channel_wise=types.get(name) != "InnerProduct")  # the manual: FC per tensor
        per_layer[name] = cf.LayerSettings(quant_enable=name not in skip, wts=wts)
    return cf.AmctSettings(batch_num=batch_num, activation_offset=activation_offset, layers=per_layer)


def _others(source: Source, optimized: onnx.ModelProto) -> dict[str, str]:
    """The model's layers without quantizable weights, by name, with their (Caffe or ONNX) type."""
    layers = quantizable_layers(optimized)
    return {n.name: source.types.get(n.name, n.op_type) for n in optimized.graph.node if n.name and n.name not in layers}


def create_quant_config(config_file: str, model_file: str, weights_file: str | None, batch_num: int = 1,
                        activation_offset: bool = True, config_defination: str | None = None,
                        skip_layers: list[str] | None = None) -> None:
    """Write config.json for every quantizable layer: from ``config_defination`` (a .cfg, whose
    settings then replace ``batch_num`` and ``activation_offset``) or from the defaults."""
    log = setup_logging()
    check_outputs({"config_file": config_file}, {"model_file": model_file, "weights_file": weights_file,
                                                 "config_defination": config_defination})
    source = Source.load(model_file, weights_file)
    if config_defination is not None:
        cfg = read_cfg(config_defination)
        optimized = source.optimize(cfg.do_fusion, tuple(cfg.skip_fusion_layers))
        layers, others = quantizable_layers(optimized), _others(source, optimized)
        settings = settings_from_cfg(cfg, {n: source.types.get(n, n) for n in layers}, source.fusable(),
                                     f"simple config file '{config_defination}'", others)
    else:
        cf.check_int("batch_num", batch_num, 1, 2**31 - 1, "greater than 0")
        cf.check_bool("activation_offset", activation_offset)
        optimized = source.optimize()
        layers, others = quantizable_layers(optimized), _others(source, optimized)
        settings = _default_settings(layers, source.types, batch_num, activation_offset, [])
    per_layer = dict(settings.layers)
    for name in skip_layers or []:
        if name in layers:
            per_layer[name] = replace(per_layer[name], quant_enable=False)
        elif name in others:
            per_layer[name] = cf.LayerSettings(quant_enable=False, plain=True)
        else:
            close = difflib.get_close_matches(name, list(layers) + list(others), n=1)
            raise ConfigError(f"skip_layers names '{name}', which is not a layer of the model"
                              + (f"; did you mean '{close[0]}'?" if close else "."))
    settings = replace(settings, layers=per_layer)
    write_text_atomic(config_file, cf.dump(settings))
    log.info("wrote %s: %d quantizable layers, %d enabled", config_file, len(layers),
             sum(ls.quant_enable for ls in settings.layers.values()))


def init(config_file: str, model_file: str, weights_file: str | None, scale_offset_record_file: str) -> AmctGraph:
    """Read the model and config.json (validated against the model); the graph the other calls take.
    The record file is written by ``save_model`` (with the rest of its outputs, all or nothing)."""
    log = setup_logging()
    source = Source.load(model_file, weights_file)
    raw = read_json(config_file, "AMCT config file", "write it with create_quant_config")
    fusion = raw if isinstance(raw, dict) else {}  # fusion first: it decides which layers there are
    skip = fusion.get("skip_fusion_layers") or []
    optimized = source.optimize(fusion.get("do_fusion", True) is not False, tuple(skip) if isinstance(skip, list) else ())
    layers = quantizable_layers(optimized)
    settings = cf.parse_settings(raw, list(layers), source.fusable(), f"config file '{config_file}'",
                                 tuple(_others(source, optimized)))
    quant = cf.to_quant_config(settings, layers, f"config file '{config_file}'")
    tune = cf.to_tune_options(settings)
    check_outputs({"scale_offset_record_file": scale_offset_record_file}, {"model_file": model_file,
                                                                            "weights_file": weights_file,
                                                                            "config_file": config_file})
    log.info("init: %s, %d quantizable layers (%d enabled), batch_num %d", model_file, len(layers),
             len(layers) - len(quant.fp_layers), settings.batch_num)
    return AmctGraph(source, optimized, settings, quant, tune, layers, str(config_file), str(scale_offset_record_file),
                     list(_PROVIDERS["providers"]))


def _fake_weights(graph: AmctGraph) -> dict[str, np.ndarray]:
    """Each enabled layer's weights quantized (ARQ, as config.json says) and dequantized."""
    inits = {t.name: t for t in graph.optimized.graph.initializer}
    nodes = {n.name: n for n in graph.optimized.graph.node}
    out = {}
    for name in graph.layers:
        if name in graph.quant.fp_layers:
            continue
        node = nodes[name]
        info = op_info(node.op_type)
        w_name = node.input[info.weight_input]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        axis = info.channel_axis(node, w.ndim) if graph.settings.layers[name].wts["channel_wise"] else None
        q, scale = quantize_weight(w, axis=axis)
        out[w_name] = dequantize(q, scale, 0, axis=axis).astype(np.float32)
    return out


def _write_modified(graph: AmctGraph, model_file: str, weights_file: str | None, what: str) -> None:
    check_outputs({"modified_model_file": model_file, "modified_weights_file": weights_file},
                  {"model_file": graph.source.model_file, "weights_file": graph.source.weights_file})
    fake = _fake_weights(graph)
    if str(model_file).lower().endswith(".onnx"):
        model = onnx.ModelProto()
        model.CopyFrom(graph.optimized)
        for t in model.graph.initializer:
            if t.name in fake:
                t.CopyFrom(numpy_helper.from_array(fake[t.name], t.name))
        save_onnx(model, model_file)
    elif graph.source.caffe and weights_file:
        text, blob = fused_caffe(graph.source.model_file, graph.source.weights_file, graph.optimized, weights=fake)
        write_text_atomic(model_file, text)
        write_bytes_atomic(weights_file, blob)
    else:
        raise ConfigError(f"{what}: modified_model_file must end in .onnx, or (for a Caffe model) be a .prototxt "
                          f"with a .caffemodel modified_weights_file; got {model_file!r}, {weights_file!r}.")


def weights_quantize_model(graph: AmctGraph, modified_model_file: str, modified_weights_file: str | None) -> None:
    """Write the model (BatchNorm fused) with each enabled layer's weights quantized and dequantized."""
    log = setup_logging()
    _write_modified(graph, modified_model_file, modified_weights_file, "weights_quantize_model")
    graph.weights_quantized = True
    log.info("weights quantized (fake-quant weights in %s)", modified_model_file)


def activation_quantize_model(graph: AmctGraph, modified_model_file: str, modified_weights_file: str | None) -> None:
    """AMCT inserts statistics layers here; int8kit records statistics in ``calibration_session``
    instead, so this writes the same modified model and marks the graph ready for calibration."""
    log = setup_logging()
    if not graph.weights_quantized:
        raise ConfigError("activation_quantize_model was called before weights_quantize_model; call "
                          "weights_quantize_model(graph, ...) first, as AMCT's sample does.")
    _write_modified(graph, modified_model_file, modified_weights_file, "activation_quantize_model")
    graph.activations_quantized = True
    log.info("ready for calibration: run batch_num=%d batches through calibration_session(graph)", graph.settings.batch_num)


def calibration_session(graph: AmctGraph) -> CalibrationSession:
    """An onnxruntime-like session over the FP32 model: ``sess.run(None, {"data": batch})`` returns the
    outputs and records the statistics of every tensor the plan may quantize."""
    setup_logging()
    if graph.session is None:
        keep = graph.tune.bn_update_iterations if graph.tune.update_bn else 0
        graph.session = CalibrationSession(graph.optimized, candidate_tensors(graph.optimized),
                                           graph.settings.batch_num, graph.providers, keep=keep)
    return graph.session


def _check_scales(quant_plan: QuantPlan, layer_of: dict[str, str]) -> None:
    """A range that gives an infinite or vanishing scale is one error naming the layer and range."""
    tiny = float(np.finfo(np.float32).tiny) * 2**23
    for name, tq in quant_plan.tensors.items():
        if tq.kind != "activation":
            continue
        scale = float(np.asarray(tq.scale).reshape(-1)[0])
        if not np.isfinite(scale) or scale < tiny or not tq.max - tq.min > 0:  # AMCT: "scale is illegal"
            raise CalibrationError(f"layer '{layer_of.get(name, name)}' (tensor '{name}'): the data range "
                                   f"[{tq.min:g}, {tq.max:g}] gives scale {scale:g}, which is "
                                   f"{'infinite' if not np.isfinite(scale) else 'too small'}; check the calibration data "
                                   "(all zeros? overflow?) or skip the layer (quant_enable false).")


def _layer_of(model: onnx.ModelProto) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in model.graph.node:
        for t in node.input:
            out.setdefault(t, node.name)
    return out


def save_model(graph: AmctGraph, save_type: str, save_path: str) -> None:
    """Plan from the recorded statistics and write the models, quant.json and the record together."""
    log = setup_logging()
    names = output_names(save_path, save_type, graph.source.caffe)
    if graph.session is None:
        raise CalibrationError("save_model was called before any calibration batch ran: run batch_num batches "
                               "through calibration_session(graph).run(...) first.")
    stats = graph.session.stats(graph.first_layer())
    quant_plan = plan(graph.optimized, stats, graph.quant)
    if graph.tune.update_bn:  # re-normalize the quantized convs on the kept batches (tune/bn_update.py)
        quant_plan, report = update_bn(graph.optimized, quant_plan, graph.session.kept,
                                       iterations=graph.tune.bn_update_iterations,
                                       fraction=graph.tune.bn_moving_average_fraction, progress=False)
        log.info("BN update: %d convs re-normalized over %d iterations on %d kept batches", report.convs,
                 graph.tune.bn_update_iterations, len(graph.session.kept))
        if graph.tune.bn_dump_dir:
            report.save(graph.tune.bn_dump_dir)
    quant_plan = canonical(quant_plan, graph.optimized)
    _check_scales(quant_plan, _layer_of(graph.optimized))
    record = plan_to_record(quant_plan, graph.optimized, graph.quant.bitwidth)
    _mark_skip_fusion(record, graph)
    write_set(names, source=graph.source, optimized=graph.optimized, plan=quant_plan, record=record,
              config={"amct": graph.settings.to_json(), "quant": graph.quant.to_dict()},
              inputs={"model_file": graph.source.model_file, "weights_file": graph.source.weights_file,
                      "config_file": graph.config_file}, extra_record=graph.record_file)
    log.info("save_model: %d layers in the record, %d tensors quantized", len(record.record), len(quant_plan.tensors))


def _mark_skip_fusion(record, graph: AmctGraph) -> None:
    skip = set(graph.settings.skip_fusion_layers) if graph.settings.do_fusion else set(graph.layers)
    for e in record.record:
        if e.key in skip:
            e.value.skip_fusion = True


def convert_model(model_file: str, weights_file: str | None, scale_offset_record_file: str, save_path: str) -> None:
    """The fake-quant and deploy models, quant.json and the record from a record file alone."""
    log = setup_logging()
    source = Source.load(model_file, weights_file)
    record = read_record(scale_offset_record_file)
    skip = tuple(e.key for e in record.record if e.value.skip_fusion)
    optimized = source.optimize(True, skip)
    quant_plan = record_to_plan(record, optimized)
    names = output_names(save_path, "Both", source.caffe)
    write_set(names, source=source, optimized=optimized, plan=quant_plan, record=record,
              config={"record": str(scale_offset_record_file)},
              inputs={"model_file": model_file, "weights_file": weights_file, "record": scale_offset_record_file})
    log.info("convert_model: %d layers from %s", len(record.record), scale_offset_record_file)


def uninplace_model(model_file: str, uninplaced_model_file: str) -> None:
    """Write the prototxt with in-place layers given blobs of their own (phase TEST layers only)."""
    log = setup_logging()
    check_outputs({"uninplaced_model_file": uninplaced_model_file}, {"model_file": model_file})
    write_text_atomic(uninplaced_model_file, uninplace(model_file))
    log.info("wrote %s", uninplaced_model_file)


__all__: list[Any] = ["activation_quantize_model", "calibration_session", "convert_model", "create_quant_config", "init",
                      "save_model", "set_cpu_mode", "set_gpu_mode", "uninplace_model", "weights_quantize_model"]
