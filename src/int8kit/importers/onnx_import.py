"""ONNX "import": check a model, bring it to opset >= 13, and fix or free its input shapes.

The reference for ``--compare`` is onnxruntime on the original, unmodified model, so the check
shows what the normalisation changed (nothing, numerically, when it worked).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import version_converter

from int8kit.errors import ConfigError, ModelError
from int8kit.graph.io import as_model
from int8kit.importers.common import Shape

log = logging.getLogger(__name__)

MIN_OPSET = 13  # QuantizeLinear with per-axis scales, Split/Squeeze with input axes
_BATCH = "N"


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _check(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelError(f"{what} fails the ONNX checker ({first}); expected a valid ONNX model, re-export it.") from None
    except ValueError as exc:  # > 2 GB in memory: the checker needs a path
        log.info("ONNX checker skipped: %s", exc)


def _upgrade(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    opset = _opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ValueError/its own types
        raise ModelError(
            f"{what} uses opset {opset} and onnx's version converter cannot bring it to {MIN_OPSET} "
            f"({str(exc).splitlines()[0][:200]}); re-export it with opset {MIN_OPSET} or newer."
        ) from None
    log.info("upgraded %s from opset %d to %d", what, opset, MIN_OPSET)
    return upgraded


def rename_inputs(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, str]:
    """Rename the model's real inputs in place (every consumer follows); returns old -> new."""
    inputs = _real_inputs(model)
    if len(names) != len(inputs):
        raise ConfigError(
            f"--input-names gives {len(names)} names {list(names)} but the model has {len(inputs)} inputs "
            f"{[vi.name for vi in inputs]}; give one name per input, in order."
        )
    mapping = {vi.name: new for vi, new in zip(inputs, names) if vi.name != new}
    taken = {o for n in model.graph.node for o in n.output} | {t.name for t in model.graph.initializer}
    clash = [n for n in mapping.values() if n in taken]
    if clash:
        raise ConfigError(f"--input-names {clash} already name tensors inside the model; choose other names.")
    for vi in inputs:
        vi.name = mapping.get(vi.name, vi.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for out in model.graph.output:
        if out.name in mapping:
            raise ConfigError(f"input '{out.name}' is also a model output; it cannot be renamed.")
    return mapping


def set_input_shapes(model: onnx.ModelProto, shapes: Sequence[Shape], *, dynamic_batch: bool = False) -> None:
    """Give the real inputs these shapes in place (``dynamic_batch``: the first dim becomes ``N``).

    Inner shapes recorded by an earlier export may contradict the new ones, so they are dropped and
    inferred again.
    """
    inputs = _real_inputs(model)
    if len(shapes) != len(inputs):
        raise ConfigError(
            f"--input-shapes gives {len(shapes)} shapes but the model has {len(inputs)} inputs "
            f"{[vi.name for vi in inputs]}; give one shape per input, separated by ';'."
        )
    for vi, shape in zip(inputs, shapes):
        tt = vi.type.tensor_type
        old = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
        if old is not None and len(old) != len(shape):
            raise ConfigError(
                f"input '{vi.name}' has rank {len(old)} {old} but --input-shapes gives {shape}; give a shape of rank {len(old)}."
            )
        if old and any(o not in (None, 0) and o != s for o, s in zip(old, shape)):
            log.warning("input '%s' was fixed to %s; setting %s as asked", vi.name, old, shape)
        tt.ClearField("shape")
        for i, d in enumerate(shape):
            dim = tt.shape.dim.add()
            if i == 0 and dynamic_batch:
                dim.dim_param = _BATCH
            else:
                dim.dim_value = int(d)
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.ClearField("shape")


def set_dynamic_batch(model: onnx.ModelProto) -> None:
    """Make the first dim of every real input symbolic (``N``) without touching the others."""
    for vi in _real_inputs(model):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim) > 0:
            tt.shape.dim[0].Clear()
            tt.shape.dim[0].dim_param = _BATCH
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.ClearField("shape")


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name (``<OpType>_<index>``) in place, so per-layer options and
    ``--compare-all`` can address it; returns how many were named."""
    taken = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            count += 1
    return count


def _infer(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelError(
            f"{what} fails ONNX shape inference ({str(exc).splitlines()[0][:300]}); check --input-shapes "
            "against what the model expects."
        ) from None
    except Exception as exc:  # custom domains, > 2 GB: keep the model without inferred shapes
        log.info("shape inference skipped for %s: %s", what, exc)
        return model


def convert(
    model: onnx.ModelProto | str | os.PathLike,
    weights: Any = None,
    *,
    input_shapes: Sequence[Shape] | None = None,
    input_names: Sequence[str] | None = None,
    dynamic_batch: bool | None = None,
    **options: Any,
) -> onnx.ModelProto:
    """Check and normalise an ONNX model: checker, opset >= 13, input names/shapes, shape inference.

    ``input_shapes`` fixes every input's shape (``dynamic_batch=True`` keeps the first dim
    symbolic); ``dynamic_batch=True`` alone frees the batch dim of a fixed-shape model. The input
    file is never modified.
    """
    if weights is not None:
        raise ConfigError("ONNX models carry their own weights; drop --weights (external data files are found beside the model).")
    if options:
        raise ConfigError(f"option(s) {sorted(options)} do not apply to ONNX models; drop them.")
    what = "the ONNX model" if isinstance(model, onnx.ModelProto) else f"ONNX model '{model}'"
    source = as_model(model)
    work = onnx.ModelProto()
    work.CopyFrom(source)  # never touch a caller's ModelProto
    _check(work, what)
    work = _upgrade(work, what)
    if name_nodes(work):
        log.info("named the unnamed nodes of %s <OpType>_<index>", what)
    if input_names:
        rename_inputs(work, input_names)
    if input_shapes:
        set_input_shapes(work, input_shapes, dynamic_batch=bool(dynamic_batch))
    elif dynamic_batch:
        set_dynamic_batch(work)
    work = _infer(work, what)
    _check(work, what + " after normalisation")
    return work


class OnnxReference:
    """onnxruntime on an ONNX model; layers are node names whose first output is fetched."""

    def __init__(self, model: onnx.ModelProto, renamed: Mapping[str, str] | None = None):
        from int8kit.runtime.session import make_session

        self.model = model
        self._back = {new: old for old, new in (renamed or {}).items()}  # converted name -> original name
        self._session = make_session(model)
        self._outputs = [o.name for o in model.graph.output]
        self._node_output = {n.name: n.output[0] for n in model.graph.node if n.name and n.output and n.output[0]}
        self._layer_sessions: dict[tuple[str, ...], Any] = {}

    def layer_names(self) -> list[str]:
        """Node names this reference can return, in graph order."""
        return list(self._node_output)

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self._back.get(k, k): v for k, v in feeds.items()}

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Model outputs by output name, or the first output of each named node by node name."""
        if layers is None:
            return dict(zip(self._outputs, self._session.run(self._outputs, self._feeds(feeds))))
        wanted = tuple(n for n in layers if n in self._node_output)
        if not wanted:
            return {}
        session = self._layer_sessions.get(wanted)
        if session is None:
            from int8kit.calib.taps import activation_tensors, tap_model
            from int8kit.runtime.session import make_session

            tensors = list(dict.fromkeys(self._node_output[n] for n in wanted))
            tapped, _ = tap_model(self.model, tensors, activation_tensors(self.model))
            session = self._layer_sessions[wanted] = make_session(tapped, optimize=False)
        tensors = [self._node_output[n] for n in wanted]
        values = dict(zip(dict.fromkeys(tensors), session.run(list(dict.fromkeys(tensors)), self._feeds(feeds))))
        return {n: values[self._node_output[n]] for n in wanted}


def reference(
    model: onnx.ModelProto | str | os.PathLike,
    weights: Any = None,
    *,
    input_shapes: Sequence[Shape] | None = None,
    input_names: Sequence[str] | None = None,
) -> OnnxReference:
    """onnxruntime on the original model (only renamed inputs are mapped back, nothing else changed)."""
    source = onnx.ModelProto()
    source.CopyFrom(as_model(model))
    renamed: dict[str, str] = {}
    if input_names:
        probe = onnx.ModelProto()
        probe.CopyFrom(source)
        renamed = rename_inputs(probe, input_names)
    if _opset(source) >= MIN_OPSET:  # convert() names nodes after any upgrade; same names when none is needed
        name_nodes(source)
    return OnnxReference(source, renamed)
