"""Quantization records written from a ``QuantPlan``, and readers for round trips.

Three formats:

* ``quant.json`` — everything the plan decided, per tensor, plus the config used;
* calibration table — tpu-mlir style text, ``name threshold min max`` per activation, with a
  date-free ``#`` header so two runs diff cleanly;
* TensorRT INT8 calibration cache — ``TRT-<version>-EntropyCalibration2`` then
  ``name: <8 hex digits>`` per activation, the hex being the big-endian IEEE-754 float32 bit
  pattern of the scale ``threshold / 127``.

All writers go through ``write_text_atomic`` so a failure never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from int8kit import __version__
from int8kit.errors import ConfigError
from int8kit.config import read_json
from int8kit.graph.io import write_text_atomic
from int8kit.plan.types import HardSwishForm, QuantPlan, TensorQuant

QUANT_JSON_FORMAT = "int8kit.quant"
QUANT_JSON_VERSION = 1
CALIBRATION_TABLE_HEADER = f"# int8kit {__version__} calibration table"
TENSORRT_HEADER = "TRT-8601-EntropyCalibration2"


# ---------------------------------------------------------------- helpers


def _ordered(names: Iterable[str], order: list[str] | None) -> list[str]:
    """Names in graph ``order`` first, then any others sorted, so output is deterministic."""
    names = list(names)
    if not order:
        return sorted(names)
    present = set(names)
    seen: set[str] = set()
    head = []
    for n in order:
        if n in present and n not in seen:
            head.append(n)
            seen.add(n)
    return head + sorted(n for n in names if n not in seen)


def _num(x: Any) -> float | None:
    """A finite float for JSON (``None`` for NaN/Inf, which strict JSON cannot hold)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _flat(a: np.ndarray | float | int, cast: type) -> list:
    return [cast(v) for v in np.asarray(a).reshape(-1)]


def _json_default(obj: Any) -> Any:
    """Turn the non-JSON values a config may carry into JSON ones."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    raise ConfigError(
        f"config value of type {type(obj).__name__} cannot be written to quant.json; "
        "expected JSON-compatible values (numbers, strings, lists, dicts), convert it first."
    )


def _check_name(name: str, where: str) -> None:
    if not name or "\n" in name or "\r" in name or name != name.strip():
        raise ConfigError(
            f"tensor name {name!r} cannot be written to the {where}; expected a non-empty name "
            "without line breaks or surrounding spaces, rename the tensor in the model."
        )


def _activations(plan: QuantPlan) -> list[TensorQuant]:
    return [tq for tq in plan.tensors.values() if tq.kind == "activation"]


def _read_lines(path: str | os.PathLike, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist; check the path.")
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- quant.json


def tensor_record(tq: TensorQuant, signed_storage: bool = False) -> dict[str, Any]:
    """The quant.json entry of one tensor: dtype and zero point as the model holds them."""
    dtype, zero_point = tq.stored(signed_storage)
    return {
        "kind": tq.kind,
        "method": tq.method,
        "dtype": dtype,
        "axis": tq.axis,
        "min": _num(tq.min),
        "max": _num(tq.max),
        "lo": _num(tq.lo),
        "hi": _num(tq.hi),
        "threshold": _num(tq.threshold),
        "scale": [_num(s) for s in _flat(tq.scale, float)],
        "zero_point": _flat(zero_point, int),
        **({"channel_step": [_num(s) for s in _flat(tq.channel_step, float)]} if tq.channel_step is not None else {}),
    }


def write_quant_json(
    plan: QuantPlan,
    path: str | os.PathLike,
    *,
    model_name: str,
    config: dict,
    order: list[str] | None = None,
) -> Path:
    """Write every plan decision (tensors, float nodes with reasons, fused nodes) as JSON."""
    doc = {
        "format": QUANT_JSON_FORMAT,
        "version": QUANT_JSON_VERSION,
        "tool": f"int8kit {__version__}",
        "model": model_name,
        "config": config,
        "tensors": {n: tensor_record(plan.tensors[n], plan.signed_storage) for n in _ordered(plan.tensors, order)},
        "float_nodes": {n: plan.float_nodes[n] for n in sorted(plan.float_nodes)},
        "fused": {n: plan.fused[n] for n in sorted(plan.fused)},
        "integer_hardswish": {y: _form_record(plan.integer_hardswish[y]) for y in sorted(plan.integer_hardswish)},
        # --th-method auto: which method each activation got and why (omitted otherwise)
        **({"method_choice": {n: plan.method_choices[n] for n in _ordered(plan.method_choices, order)}}
           if plan.method_choices else {}),
    }
    return write_text_atomic(path, _json_one_entry_per_line(doc))


def _form_record(form: HardSwishForm) -> dict:
    return {"x": form.x, "y": form.y, "nodes": list(form.nodes), "shift": form.shift, "top": form.top, "factor": form.factor}


def _json_one_entry_per_line(doc: dict) -> str:
    """JSON with one line per top-level key and per tensor/node entry: readable and diffable, and
    each line goes through the C encoder (``indent=`` falls back to pure Python: 0.2 s on
    EfficientNet-Lite0, 6 % of a whole quantize)."""

    def dump(value: object) -> str:
        return json.dumps(value, default=_json_default, allow_nan=False, ensure_ascii=False)

    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and value and key != "config":
            inner = ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in value.items())
            lines.append(f"  {dump(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_quant_json(path: str | os.PathLike) -> dict:
    """Read a quant.json written by ``write_quant_json``, checking its format and version."""
    path = Path(path)
    doc = read_json(path, "quant record", "pass the quant.json that quantize wrote")
    if not isinstance(doc, dict) or doc.get("format") != QUANT_JSON_FORMAT:
        raise ConfigError(f"'{path}' is not an int8kit quant record; expected format '{QUANT_JSON_FORMAT}', pass the quant.json that quantize wrote.")
    if doc.get("version") != QUANT_JSON_VERSION:
        raise ConfigError(
            f"quant record '{path}' has version {doc.get('version')!r}; expected {QUANT_JSON_VERSION}, "
            "re-run quantize with this int8kit version."
        )
    return doc


def plan_from_quant_json(doc: dict) -> QuantPlan:
    """Rebuild a ``QuantPlan`` (without weight values) from a ``read_quant_json`` result."""
    tensors = {}
    for name, r in doc["tensors"].items():
        scale = np.asarray(r["scale"], dtype=np.float32)
        zp = np.asarray(r["zero_point"], dtype=np.int64)
        if r["axis"] is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        tensors[name] = TensorQuant(
            name=name, kind=r["kind"], dtype=r["dtype"], scale=scale, zero_point=zp, axis=r["axis"],
            method=r["method"], lo=r["lo"] or 0.0, hi=r["hi"] or 0.0, min=r["min"] or 0.0, max=r["max"] or 0.0,
            channel_step=np.asarray(r["channel_step"], dtype=np.float32) if "channel_step" in r else None,
        )
    return QuantPlan(tensors=tensors, fused=dict(doc.get("fused", {})), float_nodes=dict(doc.get("float_nodes", {})),
                     integer_hardswish={y: HardSwishForm(**{**r, "nodes": tuple(r["nodes"])})
                                        for y, r in doc.get("integer_hardswish", {}).items()})


# ---------------------------------------------------------------- calibration table


def write_calibration_table(plan: QuantPlan, path: str | os.PathLike, *, order: list[str] | None = None) -> Path:
    """Write ``name threshold min max`` per activation tensor (graph order when ``order`` given)."""
    acts = {tq.name: tq for tq in _activations(plan)}
    lines = [CALIBRATION_TABLE_HEADER, f"# tensors: {len(acts)}", "# op_name threshold min max"]
    for name in _ordered(acts, order):
        _check_name(name, "calibration table")
        tq = acts[name]
        lines.append(f"{name} {float(tq.threshold)!r} {float(tq.min)!r} {float(tq.max)!r}")
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_calibration_table(path: str | os.PathLike) -> dict[str, tuple[float, float, float]]:
    """Read a calibration table into ``{name: (threshold, min, max)}``; ``#`` lines are comments."""
    table: dict[str, tuple[float, float, float]] = {}
    for i, line in enumerate(_read_lines(path, "calibration table"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # Split from the right: the name may itself contain spaces.
        parts = line.rsplit(maxsplit=3)
        try:
            if len(parts) != 4:
                raise ValueError
            table[parts[0]] = (float(parts[1]), float(parts[2]), float(parts[3]))
        except ValueError:
            raise ConfigError(
                f"calibration table '{path}' line {i} reads {line!r}; expected 'name threshold min max', fix or regenerate the table."
            ) from None
    return table


# ---------------------------------------------------------------- TensorRT cache


def float_to_hex(value: float) -> str:
    """Big-endian IEEE-754 float32 bit pattern as 8 lowercase hex digits (1.0 -> '3f800000')."""
    return struct.pack(">f", float(np.float32(value))).hex()


def hex_to_float(text: str) -> float:
    """Inverse of ``float_to_hex``."""
    return float(struct.unpack(">f", bytes.fromhex(text.strip().zfill(8)))[0])


def write_tensorrt_cache(
    plan: QuantPlan,
    path: str | os.PathLike,
    *,
    order: list[str] | None = None,
    header: str = TENSORRT_HEADER,
) -> Path:
    """Write a TensorRT INT8 calibration cache with scale ``threshold / 127`` per activation.

    TensorRT's INT8 is symmetric, so the cache holds one scale per tensor; a tensor whose
    threshold is 0 falls back to its plan scale so TensorRT never sees a zero scale.
    """
    acts = {tq.name: tq for tq in _activations(plan)}
    lines = [header]
    for name in _ordered(acts, order):
        _check_name(name, "TensorRT cache")
        tq = acts[name]
        scale = np.float32(tq.threshold / 127.0)
        if not scale > 0:
            scale = np.float32(np.asarray(tq.scale).reshape(-1)[0])
        lines.append(f"{name}: {float_to_hex(scale)}")
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_tensorrt_cache(path: str | os.PathLike) -> dict[str, float]:
    """Read a TensorRT calibration cache into ``{tensor name: scale}``."""
    lines = _read_lines(path, "TensorRT calibration cache")
    if not lines or not lines[0].startswith("TRT-"):
        first = lines[0] if lines else ""
        raise ConfigError(
            f"TensorRT calibration cache '{path}' starts with {first!r}; expected a header like "
            f"'{TENSORRT_HEADER}', pass a text calibration cache."
        )
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, hexval = line.rpartition(":")
        try:
            if not sep or len(hexval.strip()) > 8:
                raise ValueError
            scales[name.strip()] = hex_to_float(hexval)
        except ValueError:
            raise ConfigError(
                f"TensorRT calibration cache '{path}' line {i} reads {line!r}; expected 'name: 8 hex digits', regenerate the cache."
            ) from None
    return scales


def tensor_order(model: onnx.ModelProto) -> list[str]:
    """Every tensor name in graph order (inputs, then each node's inputs and outputs): the order of the records."""
    order = [i.name for i in model.graph.input]
    for node in model.graph.node:
        order.extend(i for i in node.input if i)
        order.extend(node.output)
    return list(dict.fromkeys(order))
