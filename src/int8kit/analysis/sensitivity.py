"""Per-layer sensitivity: how much error each INT8 layer makes on its own (isolated), split into
its weights' and its inputs' share, beside the error the INT8 model accumulates there.

    sens = layer_sensitivity(optimized_fp32, plan, evaluator)      # or an INT8 model + its quant.json
    for s in sens[:5]:
        print(s.layer, s.isolated.sqnr_db, s.accumulated.sqnr_db)
    worst_first = sensitivity_ranking(sens)

The isolated numbers come from the FP32 input tensors the evaluator's layer reference already
holds: each layer runs alone (analysis/isolated.py) on exact inputs, four times per piece of
samples (float, inputs quantized, weights quantized, both). No model is quantized and evaluated
once per layer, so ranking a candidate configuration costs about one FP32 pass. Memory is one
piece of samples plus two one-node sessions per layer; every error is folded at once into an
``ErrorAccumulator`` (the project's one definition of SQNR, cosine and relative error).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from int8kit.analysis.isolated import (Layer, fake_quantize, layer_macs, layer_sessions, layer_weights, plan_layers,
                                       suffix_model)
from int8kit.analysis.layerwise import _reader_domains, layer_error_stats
from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.errors import ConfigError
from int8kit.evaluate.accumulate import ErrorAccumulator, ErrorStats
from int8kit.evaluate.evaluator import LAYER_SAMPLES, Evaluator
from int8kit.graph.io import as_model
from int8kit.plan.types import QuantPlan
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger(__name__)


@dataclass
class LayerSensitivity:
    """The error of one layer: a node of the FP32 model the plan runs in INT8, or a float op that
    reads quantized tensors (``int8`` False; floating it changes nothing, its inputs stay quantized).

    ``accumulated``: the INT8 model's error at the layer's output (everything before it INT8 too;
    ``None`` when not computed). ``isolated``: only this layer's inputs and weights quantized, on
    exact FP32 inputs; ``isolated_weight`` / ``isolated_activation``: only its weights (and bias) /
    only its inputs (``isolated_weight`` is ``None`` for layers without weights). Each is an
    ``ErrorStats`` (``sqnr_db``, ``cosine``, ``relative_error``, ...), measured at ``output``;
    ``isolated_output`` is the isolated error carried through the rest of the FP32 model, measured
    at the model's scored output.
    """

    layer: str
    op_type: str
    tensors: list[str]  # the quantized tensors the layer reads (activation inputs, then weights)
    output: str
    macs: int  # multiply-accumulates per sample (Conv/Gemm/MatMul; 0 for other ops)
    isolated: ErrorStats
    isolated_activation: ErrorStats
    isolated_weight: ErrorStats | None
    accumulated: ErrorStats | None = None
    isolated_output: ErrorStats | None = None  # the model's output, only this layer quantized
    methods: dict[str, str] = field(default_factory=dict)  # activation input -> threshold method that ran
    int8: bool = True  # False: a float op (HardSwish, Softmax) that reads quantized tensors and owns their error


def layer_sensitivity(
    fp32_model: Any,
    plan_or_int8_model: QuantPlan | onnx.ModelProto | str | os.PathLike,
    evaluator: Evaluator,
    *,
    samples: int = LAYER_SAMPLES,
    quant_json: Any = None,
    accumulated: bool = True,
    layers: list[str] | None = None,
    propagate: bool = True,
    progress: bool = False,
) -> list[LayerSensitivity]:
    """The sensitivity of every INT8 layer, in graph order.

    ``fp32_model``: the model the plan was made for (``QuantizeResult.optimized_model``, or the
    ``<stem>_fp32_optimized.onnx`` quantize writes). ``plan_or_int8_model``: a ``QuantPlan`` (cheap:
    re-plan per candidate configuration and rank again), or an INT8 model written by quantize, read
    with its ``quant_json`` (default: the ``<stem>_quant.json`` beside it). ``evaluator``: its layer
    reference (first ``samples`` samples) gives the FP32 inputs; its model must hold the same
    tensor names (the original or the optimized model). ``accumulated`` also runs the INT8 model
    (emitted from the plan when a plan is given). ``propagate`` also carries each layer's isolated
    error through the rest of the FP32 model to the evaluator's output (``isolated_output``: one
    run of the model's remainder per layer and piece). ``layers`` keeps only those node names.
    """
    model = as_model(fp32_model)
    plan, int8_model = resolve_plan(model, plan_or_int8_model, quant_json)
    chosen = plan_layers(model, plan)
    if layers is not None:
        unknown = sorted(set(layers) - {l.name for l in chosen})
        if unknown:
            raise ConfigError(f"layers {unknown[:5]} are not INT8 layers of this plan; expected node names the plan "
                              f"quantizes (e.g. {[l.name for l in chosen[:3]]}); check the names.")
        chosen = [l for l in chosen if l.name in set(layers)]
    known = activation_tensors(evaluator.model)
    missing = [l for l in chosen if any(i not in known for i in l.inputs)]
    if missing:
        log.info("left out %d layer(s) whose inputs the FP32 reference does not hold (non-float inputs or renamed): %s",
                 len(missing), [l.name for l in missing[:5]])
    chosen = [l for l in chosen if l not in missing]
    isolated = _isolated(model, plan, chosen, evaluator, samples, propagate, progress)
    acc: dict[str, ErrorStats] = {}
    if accumulated and chosen:
        if int8_model is None:
            from int8kit.emit.qdq import emit_qdq

            int8_model = emit_qdq(model, plan)
        outputs = list(dict.fromkeys(l.output for l in chosen))
        acc = layer_error_stats(evaluator.model, int8_model, None, tensors=outputs, max_samples=samples,
                                evaluator=evaluator, progress=progress)
    for s in isolated:
        s.accumulated = acc.get(s.output)
    return isolated


_RANK_BY = ("isolated", "isolated_output", "isolated_weight", "isolated_activation", "accumulated")


def sensitivity_ranking(sensitivities: list[LayerSensitivity] | Any, *args: Any, by: str = "isolated_output",
                        int8_only: bool = True, **kwargs: Any) -> list[str]:
    """Layer names, most sensitive first: largest relative error first, ties in graph order.
    ``int8_only`` leaves out the float ops that read quantized tensors (``int8`` False): keeping
    one of them float changes nothing, so the search never floats them; the report shows them.

    ``by``: ``isolated_output`` (default: the layer's isolated error carried to the model's output;
    ``isolated`` where it was not computed), ``isolated`` (at the layer's own output),
    ``isolated_weight``, ``isolated_activation`` or ``accumulated``. The default is the one that
    predicts the task metric: on EfficientNet-Lite0 its Spearman correlation with the output error
    of the model with only that layer quantized was +0.92, the layer-local error's -0.26
    (benchmarks/bench_sensitivity.py, docs/analyze.md). Takes ``layer_sensitivity``'s result, or
    its arguments (then computes it, without the accumulated pass unless ``by="accumulated"``)."""
    if by not in _RANK_BY:
        raise ConfigError(f"sensitivity_ranking by={by!r}; expected one of {', '.join(_RANK_BY)}.")
    if not (isinstance(sensitivities, list) and all(isinstance(s, LayerSensitivity) for s in sensitivities)):
        kwargs.setdefault("accumulated", by == "accumulated")
        sensitivities = layer_sensitivity(sensitivities, *args, **kwargs)

    def error(s: LayerSensitivity) -> float:
        e = getattr(s, by)
        if e is None and by == "isolated_output":
            e = s.isolated
        return -1.0 if e is None or np.isnan(e.relative_error) else e.relative_error

    order = sorted(range(len(sensitivities)), key=lambda i: (-error(sensitivities[i]), i))
    return [sensitivities[i].layer for i in order if sensitivities[i].int8 or not int8_only]


def resolve_plan(model: onnx.ModelProto, plan_or_int8: Any, quant_json: Any = None) -> tuple[QuantPlan, onnx.ModelProto | None]:
    """A plan with weight values: the plan itself, or one rebuilt from an INT8 model's quant
    record, its quantized weights read from the INT8 model (``<weight>_quantized``)."""
    if isinstance(plan_or_int8, QuantPlan):
        return plan_or_int8, None
    from int8kit.analysis.report import find_quant_json
    from int8kit.emit.records import plan_from_quant_json, read_quant_json

    record = quant_json if quant_json is not None else find_quant_json(plan_or_int8)
    if record is None:
        where = f"'{plan_or_int8}'" if isinstance(plan_or_int8, (str, os.PathLike)) else "the INT8 model"
        raise ConfigError(f"no quant record found for {where}; expected the <stem>_quant.json that quantize writes beside "
                          "<stem>_int8.onnx; pass it with --quant-json (or pass the QuantPlan).")
    doc = record if isinstance(record, dict) else read_quant_json(Path(record))
    plan = plan_from_quant_json(doc)
    int8 = as_model(plan_or_int8)
    inits = {t.name: t for t in int8.graph.initializer}
    for name, tq in plan.tensors.items():
        if tq.kind in ("weight", "bias") and name + "_quantized" in inits:
            tq.values = numpy_helper.to_array(inits[name + "_quantized"])
        elif tq.kind in ("weight", "bias") and name in inits:  # a conv run in float: its dequantized values
            tq.values = tq.integers_of(numpy_helper.to_array(inits[name]))
    fp_inits = {t.name for t in model.graph.initializer}
    for name in fp_inits & set(inits):  # biases kept float (OpenVINO, TensorRT) carry their correction
        if name not in plan.tensors and any(name in n.input for n in int8.graph.node if n.op_type in ("Conv", "Gemm", "ConvTranspose")):
            plan.float_biases[name] = numpy_helper.to_array(inits[name])
    return plan, int8


def _isolated(model: onnx.ModelProto, plan: QuantPlan, layers: list[Layer], evaluator: Evaluator, samples: int,
              propagate: bool, progress: bool) -> list[LayerSensitivity]:
    """Layer by layer (one layer's sessions alive at a time), piece by piece of the reference."""
    if not layers:
        return []
    names = list(dict.fromkeys(i for l in layers for i in l.inputs))
    ref = evaluator.layer_reference(samples, names)
    pieces = _Pieces(evaluator, ref, names)
    output = evaluator.output
    reference_out = pieces.model_outputs(model, output) if propagate else []
    domains = _reader_domains(model, [l.output for l in layers])
    out = []
    bar = tqdm(total=ref.records("inputs") * len(layers), unit="layer", desc="isolated error", disable=not progress,
               leave=False)
    for layer in layers:
        qw = layer_weights(layer, plan)
        fp, q = layer_sessions(layer, model, qw)
        after = suffix_model(model, layer.output, output) if propagate else None
        rest = make_session(after, threads=1) if after is not None else None
        sums = {k: ErrorAccumulator(domains.get(layer.output)) for k in ("both", "act", "weight")}
        carried = ErrorAccumulator()
        macs = 0
        for i in range(ref.records("inputs")):
            piece, values = pieces.get(i, layer.inputs)
            feed = {n: np.asarray(values[n], np.float32) for n in layer.inputs}
            qfeed = {n: fake_quantize(v, plan.tensors[n]) if n in plan.tensors else v for n, v in feed.items()}
            at = f"layer '{layer.name}' alone"
            exact = run_checked(fp, [layer.output], feed, where=at)[0]
            macs = macs or layer_macs(layer, exact.shape)
            got = run_checked(fp, [layer.output], qfeed, where=at)[0]
            sums["act"].add(exact, got)
            if qw:
                sums["weight"].add(exact, run_checked(q, [layer.output], feed, where=at)[0])
                got = run_checked(q, [layer.output], qfeed, where=at)[0]
                sums["both"].add(exact, got)
            if rest is not None:
                rest_feed = {n.name: piece[n.name] for n in rest.get_inputs() if n.name != layer.output}
                rest_feed[layer.output] = got
                carried.add(reference_out[i], run_checked(rest, [output], rest_feed, where=f"the model after '{layer.name}'")[0])
            del piece, values, feed, qfeed, exact, got
            bar.update(1)
        act = sums["act"].result()
        out.append(LayerSensitivity(
            layer=layer.name, op_type=layer.node.op_type, tensors=layer.quantized_inputs + layer.weights,
            output=layer.output, macs=macs, isolated=sums["both"].result() if qw else act, isolated_activation=act,
            isolated_weight=sums["weight"].result() if qw else None,
            isolated_output=carried.result() if rest is not None else None,
            methods={n: plan.tensors[n].method for n in layer.quantized_inputs}, int8=layer.int8))
        del fp, q, rest
    bar.close()
    return out


class _Pieces:
    """The reference's pieces: inputs and the FP32 values of some tensors, read from the store, or
    computed again piece by piece when the reference keeps only the inputs (too large to store)."""

    def __init__(self, evaluator: Evaluator, ref: Any, names: list[str]) -> None:
        self.ref, self.session, self.names = ref, None, names
        if not ref.meta.get("values"):
            tapped, _ = tap_model(evaluator.model, names, activation_tensors(evaluator.model))
            self.session = make_session(tapped)

    def get(self, i: int, names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        piece = self.ref.record("inputs", i)
        inputs = {n: piece[n] for n in names if n in piece}
        wanted = [n for n in names if n not in piece]
        if self.session is None:
            values = {n: self.ref.get("values", n, i) for n in wanted}
        else:
            values = dict(zip(wanted, run_checked(self.session, wanted, piece, where="per-layer samples (FP32 model)")))
        return piece, {**inputs, **values}

    def model_outputs(self, model: onnx.ModelProto, output: str) -> list[np.ndarray]:
        """``output`` of ``model`` on every piece (kept: one output per sample)."""
        session = make_session(model)
        return [run_checked(session, [output], self.ref.record("inputs", i), where="per-layer samples (FP32 model)")[0]
                for i in range(self.ref.records("inputs"))]
