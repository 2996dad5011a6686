"""Which tensors calibration taps, and the copy of the model that exposes them as outputs."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence

import onnx

from int8kit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}
UNKNOWN = 0


def infer(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` with inferred value infos, or ``None`` where shape inference fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # custom ops or >2 GB models
        log.debug("shape inference failed (%s); using declared types only, no in-graph reductions", exc)
        return None


def _inferred_types(model: onnx.ModelProto, inferred: onnx.ModelProto | None) -> dict[str, int]:
    """Element type of every tensor shape inference can type (0 where it cannot)."""
    g = (inferred or model).graph  # without inference: the declared types
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs and everything computed only from them (folded shapes, weights)."""
    g = model.graph
    const = {t.name for t in g.initializer}
    const.add("")  # an omitted optional input does not make a node variable
    for node in g.node:
        if node.op_type == "Constant" or (node.input and all(i in const for i in node.input)):
            const.update(node.output)
    const.discard("")
    return const


def activation_tensors(model: onnx.ModelProto, inferred: onnx.ModelProto | None | bool = False) -> dict[str, int]:
    """Float activations in graph order: float graph inputs, then float outputs of every node.

    Values are ONNX element types; ``0`` marks a tensor whose type shape inference could not tell
    (the session reports its real type and non-float ones are dropped then). ``inferred``: the
    result of ``infer(model)`` when the caller has it (inference is run here otherwise).
    """
    types = _inferred_types(model, infer(model) if inferred is False else inferred)  # type: ignore[arg-type]
    const = _constant_tensors(model)
    out: dict[str, int] = {}
    for vi in model.graph.input:
        if vi.name not in const and types.get(vi.name, UNKNOWN) in FLOAT_TYPES:
            out[vi.name] = types[vi.name]
    for node in model.graph.node:
        for name in node.output:
            if not name or name in const or name in out:
                continue
            t = types.get(name, UNKNOWN)
            if t in FLOAT_TYPES or t == UNKNOWN:
                out[name] = t
    return out


def resolve_tensors(model: onnx.ModelProto, tensors: Sequence[str], known: dict[str, int]) -> list[str]:
    """Check a user's tensor list: every name must be a float activation of the model."""
    if isinstance(tensors, str):
        tensors = [tensors]
    inits = {t.name for t in model.graph.initializer}
    every = {vi.name for vi in model.graph.input} | {o for n in model.graph.node for o in n.output if o}
    result: list[str] = []
    for name in tensors:
        if name in result:
            continue
        if name in known:
            result.append(name)
            continue
        if name in inits:
            raise ConfigError(f"tensor '{name}' is a weight (initializer), not an activation; drop it from the tensor list.")
        if name in every:
            raise ConfigError(
                f"tensor '{name}' is not a float activation (integer or constant); expected float tensors, drop it from the list."
            )
        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"tensor '{name}' is not in the model{hint}; expected names of node outputs or graph inputs.")
    return result


def tap_model(model: onnx.ModelProto, names: Sequence[str], known: dict[str, int]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose graph outputs also include ``names``; returns it and the names to fetch."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    existing = {o.name for o in tapped.graph.output}
    for name in names:
        if name in existing:
            continue
        vi = onnx.ValueInfoProto(name=name)
        if known.get(name, UNKNOWN) != UNKNOWN:
            # Type without shape: symbolic shapes from inference may disagree with the runtime's.
            vi.type.tensor_type.elem_type = known[name]
        # An untyped output is accepted by onnxruntime, which reports the type it computes.
        tapped.graph.output.append(vi)
    return tapped, list(names)


def pin_sample_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None) -> onnx.ModelProto:
    """``model`` with each input's dynamic non-batch dims set to the data's (``shapes``: the one
    sample shape of each input), or ``model`` itself when nothing is dynamic or the shapes are
    unknown. Shape inference then sizes every activation, so calibration can reduce them inside
    onnxruntime (PP-OCRv4 det, (N, 3, ?, ?) input, 32 pages at 640x640: 5.5 s / 1.16 GB -> 3.7 s / 0.52 GB).
    """
    if not shapes:
        return model
    sized = list(_sized_inputs(model, shapes))
    _check_shared_dims(sized)
    pinned: onnx.ModelProto | None = None
    for i, name, dims, want in sized:
        if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            continue
        if pinned is None:
            pinned = onnx.ModelProto()
            pinned.CopyFrom(model)
        for d, size in zip(pinned.graph.input[i].type.tensor_type.shape.dim[1:], want):
            d.ClearField("dim_param")
            d.dim_value = int(size)
    return model if pinned is None else pinned


_Sized = tuple[int, str, Sequence[onnx.TensorShapeProto.Dimension], tuple[int, ...]]


def _sized_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> Iterator[_Sized]:
    """(index, name, non-batch dims, the data's sample shape) of each input the data gives a shape of the same rank."""
    for i, vi in enumerate(model.graph.input):
        want = shapes.get(vi.name)
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if want is not None and t is not None and t.HasField("shape") and len(t.shape.dim) == len(want) + 1:
            yield i, vi.name, t.shape.dim[1:], want


def _check_shared_dims(sized: list[_Sized]) -> None:
    """Inputs that share a named dim (BERT's ids and mask: 'sequence') must get one size from the data."""
    seen: dict[str, tuple[str, int]] = {}
    for _, name, dims, want in sized:
        for d, size in zip(dims, want):
            if not d.dim_param:
                continue
            other = seen.setdefault(d.dim_param, (name, int(size)))
            if other[1] != size:
                raise DataError(
                    f"inputs '{other[0]}' and '{name}' share dimension '{d.dim_param}' in the model, but the data gives "
                    f"them {other[1]} and {size}; expected one size, pad or cut the arrays to the same length."
                )


def static_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto | None | bool = False) -> dict[str, tuple[int | None, ...]]:
    """Shape of every tensor shape inference can tell (``None`` for a symbolic or unknown dim).

    ``inferred``: the result of ``infer(model)`` when the caller has it (run here otherwise).
    """
    inferred = infer(model) if inferred is False else inferred
    if inferred is None:  # no static shapes without inference
        return {}
    g = inferred.graph
    shapes: dict[str, tuple[int | None, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is None or not t.HasField("shape"):
            continue
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
    return shapes


def default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def add_reductions(
    model: onnx.ModelProto, name: str, channels: int | None, inner: int, stride: int, rows: bool
) -> list[str]:
    """Append to ``model`` (in place) nodes that reduce float tensor ``name`` inside onnxruntime.

    The tensor is viewed as (N, C, inner) (``channels=C``) or (N, inner) (``channels=None``). Outputs,
    in order: row minima, row maxima, row sums (over the last axis: (N, C) or (N,)) and the histogram subset: every ``stride``-th value of each (n, c) row when ``rows``,
    else of each flattened sample (the subset ``collect`` histograms; ``name`` itself when ``stride`` is 1,
    then ``name`` must not be a graph input). Needs opset >= 10 (Slice steps).
    """
    opset = default_opset(model)
    g = model.graph
    tag = f"{name}::int8kit"
    shape = [0, channels, inner] if channels is not None else [0, inner]
    last = len(shape) - 1

    def const(suffix: str, values: list[int]) -> str:
        cname = f"{tag}/{suffix}"
        g.node.append(
            onnx.helper.make_node(
                "Constant", [], [cname], value=onnx.helper.make_tensor(cname, onnx.TensorProto.INT64, [len(values)], values)
            )
        )
        return cname

    view = f"{tag}/view"
    g.node.append(onnx.helper.make_node("Reshape", [name, const("shape", shape)], [view]))
    # Row sums: per-channel means, and NaN detection (onnxruntime's ReduceMin/Max skip NaN).
    outs = [f"{tag}/min", f"{tag}/max", f"{tag}/sum"]
    axes = const("axes", [last])
    for op, out in zip(("ReduceMin", "ReduceMax", "ReduceSum"), outs):
        # axes became an input in opset 13 for ReduceSum, in 18 for the others
        if opset >= (13 if op == "ReduceSum" else 18):
            g.node.append(onnx.helper.make_node(op, [view, axes], [out], keepdims=0))
        else:
            g.node.append(onnx.helper.make_node(op, [view], [out], keepdims=0, axes=[last]))
    src = view
    if not rows and channels is not None:
        src = f"{tag}/flat"
        g.node.append(onnx.helper.make_node("Reshape", [view, const("flatshape", [0, channels * inner])], [src]))
    width = inner if rows or channels is None else channels * inner
    sub = f"{tag}/sub"
    if stride == 1:  # histogrammed whole: the tensor itself (its layout does not matter to a histogram)
        sub = name
    else:
        g.node.append(
            onnx.helper.make_node(
                "Slice",
                [src, const("starts", [0]), const("ends", [width]), const("saxes", [-1]), const("steps", [stride])],
                [sub],
            )
        )
    outs.append(sub)
    present = {o.name for o in g.output}
    for out in outs:
        if out in present:  # a model output histogrammed whole
            continue
        vi = onnx.ValueInfoProto(name=out)
        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        g.output.append(vi)
    return outs
