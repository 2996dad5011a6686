"""Pieces every importer shares: parsing ``--input-shapes``/``--input-names`` and the ``Reference`` protocol."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from int8kit.errors import ConfigError

Shape = tuple[int, ...]


@runtime_checkable
class Reference(Protocol):
    """The original model running in its own runtime (OpenCV dnn, torch, onnxruntime, ...)."""

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``layers=None``: the model outputs keyed by the ONNX graph output names; otherwise each
        named layer's first output keyed by the layer (= ONNX node) name. Names the runtime cannot
        produce are left out of the result."""
        ...


def parse_input_shapes(text: str | Sequence[Sequence[int]] | None) -> list[Shape] | None:
    """``'(1,3,224,224);(1,4)'`` (or ``'1,3,224,224'`` or already a list of shapes) -> list of int tuples."""
    if text is None:
        return None
    if not isinstance(text, str):
        items = list(text)
        flat = bool(items) and all(isinstance(d, (int, np.integer)) for d in items)  # one shape given flat
        shapes = [tuple(items)] if flat else [tuple(s) for s in items]
    else:
        shapes = []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            try:
                value = ast.literal_eval(part)
            except (ValueError, SyntaxError):
                raise ConfigError(
                    f"--input-shapes entry '{part}' is not a shape; expected comma-separated integers such as "
                    "'(1,3,224,224)', one per input separated by ';'."
                ) from None
            shapes.append(tuple(value) if isinstance(value, (tuple, list)) else (value,))
    for shape in shapes:
        if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise ConfigError(
                f"input shape {shape} is not valid; expected positive integers such as (1,3,224,224)."
            )
    return [tuple(int(d) for d in s) for s in shapes] or None


def parse_names(text: str | Sequence[str] | None) -> list[str] | None:
    """``'a,b'``, the manual's ``'(a);(b)'`` or a list -> list of names (``None`` when empty)."""
    if text is None:
        return None
    if isinstance(text, str):
        sep = ";" if ";" in text else ","
        names = [n.strip().removeprefix("(").removesuffix(")").strip() for n in text.split(sep)]
    else:
        names = [str(n) for n in text]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise ConfigError(f"--input-names repeats a name ({', '.join(names)}); give each input once.")
    return names or None


def default_input_names(count: int, names: Sequence[str] | None) -> list[str]:
    """The user's input names, or ``input`` / ``input0, input1, ...``; the count must match."""
    if names:
        if len(names) != count:
            raise ConfigError(
                f"--input-names gives {len(names)} names {list(names)} but the model takes {count} inputs; "
                "give one name per input, in order."
            )
        return list(names)
    return ["input"] if count == 1 else [f"input{i}" for i in range(count)]
