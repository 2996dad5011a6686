"""``--compare`` (the manual's ``--cmp``): the original model in its own runtime vs the converted ONNX model.

Both run on the same batches (the user's data, or seeded random data of the input shapes). Per
model output, and with ``layers`` per intermediate layer matched by name (layer name == ONNX node
name), the result holds int8kit's one set of error metrics (``evaluate.accumulate``, defined in
docs/metrics.md): the largest absolute error, the largest error relative to the reference's largest
magnitude (the number ``--tolerance`` checks), and the mean and lowest per-sample cosine.
Batches run in pieces of bounded size (``runtime.chunking``): every layer of a piece is held at once.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from tabulate import tabulate
from tqdm import tqdm

from int8kit.data.sources import InputSpec, batches_from, model_input_specs
from int8kit.errors import ConfigError, DataError
from int8kit.evaluate.accumulate import ErrorAccumulator
from int8kit.runtime.chunking import Chunker

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-3
DEFAULT_SAMPLES = 8


@dataclass
class TensorDiff:
    """Errors of one converted tensor against the original runtime's."""

    name: str
    kind: str  # "output" or "layer"
    shape: tuple[int, ...] | None = None
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0  # max |onnx - ref| / max |ref|: what --tolerance checks
    cosine: float = 1.0  # mean of the per-sample cosines (before 2026-12: the lowest one)
    min_cosine: float = 1.0  # lowest per-sample cosine
    note: str = ""  # why a tensor could not be compared
    ok: bool = True
    _errors: ErrorAccumulator = field(default_factory=ErrorAccumulator, repr=False)

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Fold one batch into the running errors."""
        if self.note:
            return
        a = np.asarray(ref, dtype=np.float64)
        b = np.asarray(got, dtype=np.float64)
        if a.shape != b.shape:
            self.note = f"shape {tuple(b.shape)} vs reference {tuple(a.shape)}"
            return
        self.shape = tuple(a.shape[1:]) if a.ndim else ()
        if a.size == 0:
            return
        if _is_detection_layout(a):
            a, b = _canonical_rows(a), _canonical_rows(b)
        if a.ndim == 1:  # a batch-less vector is one sample, not one sample per value
            a, b = a[None], b[None]
        self._errors.add(a, b)
        e = self._errors.result()
        self.max_abs_error, self.max_rel_error = e.max_abs_error, e.peak_relative_error
        self.cosine, self.min_cosine = e.cosine, e.min_cosine

    def judge(self, tolerance: float) -> None:
        """``ok`` when the relative error is within ``tolerance`` (NaN fails); an output that could not
        be compared fails, a layer that could not be matched only carries its note."""
        if self.note:
            self.ok = self.kind != "output"
        else:
            self.ok = math.isfinite(self.max_rel_error) and self.max_rel_error <= tolerance


def _is_detection_layout(a: np.ndarray) -> bool:
    """SSD DetectionOutput's [1, 1, N, 7] rows: (image, label, confidence, x1, y1, x2, y2)."""
    return a.ndim == 4 and a.shape[1] == 1 and a.shape[-1] == 7


def _canonical_rows(a: np.ndarray) -> np.ndarray:
    """Detection rows sorted by image, label and box: two runtimes rank detections whose confidences
    tie to 1e-7 differently, which is the same result in another order, not a conversion error."""
    rows = a.reshape(-1, 7)
    order = np.lexsort((rows[:, 2], rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], rows[:, 1], rows[:, 0]))
    return rows[order].reshape(a.shape)


@dataclass
class CompareResult:
    """Per-output (and per-layer) errors of the converted model against the original runtime."""

    framework: str
    model: str
    samples: int
    tolerance: float
    random_data: bool
    outputs: list[TensorDiff]
    layers: list[TensorDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.outputs + self.layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become ``None``."""
        def row(d: TensorDiff) -> dict[str, Any]:
            out = {k: v for k, v in asdict(d).items() if not k.startswith("_")}
            out["shape"] = list(d.shape) if d.shape is not None else None
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

        return {
            "framework": self.framework,
            "model": self.model,
            "samples": self.samples,
            "random_data": self.random_data,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "outputs": [row(d) for d in self.outputs],
            "layers": [row(d) for d in self.layers],
        }

    def to_table(self) -> str:
        """One row per tensor: max abs error, max relative error, lowest cosine, verdict."""
        rows = []
        for d in self.outputs + self.layers:
            verdict = ("ok" if d.ok else "FAIL") if not d.note else ("FAIL: " if not d.ok else "skipped: ") + d.note
            shape = "x".join(map(str, d.shape)) if d.shape else ""
            rows.append([d.kind, d.name, shape, f"{d.max_abs_error:.3g}", f"{d.max_rel_error:.3g}", f"{d.cosine:.6f}",
                     f"{d.min_cosine:.6f}", verdict])
        kind = " random" if self.random_data else ""
        head = (f"{self.framework} '{self.model}' vs converted ONNX on {self.samples}{kind} sample(s); "
                f"tolerance {self.tolerance:g} (max relative error)")
        table = tabulate(rows, headers=["", "tensor", "shape", "max abs err", "max rel err", "cosine", "min cosine", "result"], disable_numparse=True)
        failed = sum(not d.ok for d in self.outputs + self.layers)
        tail = "all within tolerance" if not failed else f"{failed} tensor(s) past the tolerance"
        return f"{head}\n{table}\n{tail}"


def _random_batches(specs: list[InputSpec], shapes: Sequence[tuple[int, ...]] | None, samples: int,
                    seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Seeded data of the model's input shapes, one sample per batch dim slot, ``samples`` in all."""
    resolved = []
    for i, spec in enumerate(specs):
        shape = tuple(shapes[i]) if shapes and i < len(shapes) else spec.shape
        if shape is None or not shape or any(d is None for d in shape[1:]):
            raise ConfigError(
                f"input '{spec.name}' has shape {spec.shape} with unknown dims, so random data cannot be made; "
                "pass --input-shapes or --data."
            )
        resolved.append((spec, shape))
    batch = resolved[0][1][0] or 1  # the first input's batch dim (dynamic: 1)
    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        feeds = {}
        for spec, shape in resolved:
            full = (batch, *shape[1:])
            if spec.is_float:
                feeds[spec.name] = rng.standard_normal(full).astype(spec.dtype)
            elif spec.dtype == np.bool_:
                feeds[spec.name] = rng.random(full) < 0.5
            else:
                feeds[spec.name] = rng.integers(0, 10, size=full).astype(spec.dtype)
        done += batch
        yield feeds


def _layer_candidates(model: onnx.ModelProto, layers: bool | Sequence[str]) -> list[str]:
    """Node names whose first output is a float activation, in graph order (or the user's list, checked)."""
    from int8kit.calib.taps import activation_tensors

    float_outputs = activation_tensors(model)
    nodes = [n.name for n in model.graph.node if n.name and n.output and n.output[0] in float_outputs]
    if layers is True:
        return nodes
    known = set(nodes)
    for name in layers:  # type: ignore[union-attr]
        if name not in known:
            close = difflib.get_close_matches(name, nodes, n=3)
            hint = f" (did you mean {close}?)" if close else ""
            raise ConfigError(f"layer '{name}' is not a node of the converted model{hint}; expected ONNX node names (int8kit inspect).")
    return list(layers)  # type: ignore[arg-type]


def compare(
    framework: str,
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    data: Any = None,
    input_shapes: Any = None,
    input_names: Any = None,
    layers: bool | Sequence[str] = False,
    tolerance: float = DEFAULT_TOLERANCE,
    samples: int | None = DEFAULT_SAMPLES,
    batch_size: int | None = None,
    onnx_model: onnx.ModelProto | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CompareResult:
    """Run the original model (``framework``'s runtime) and its ONNX conversion on the same data.

    ``data``: anything ``batches_from`` accepts (.npy/.npz, arrays, a sample source, batches), or
    ``None`` for seeded random data; ``samples`` caps the samples used (``None``: all of ``data``).
    ``onnx_model``: the converted model (converted here when not given). ``layers``: ``True`` for
    every layer the reference can produce, or a list of ONNX node names.
    """
    from int8kit.importers import get_importer, resolve
    from int8kit.importers.common import parse_input_shapes, parse_names
    from int8kit.runtime.session import make_session

    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ConfigError(f"--tolerance must be a non-negative number, got {tolerance!r}; pass e.g. 1e-3.")
    if samples is not None and samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}.")
    key, model, weights = resolve(model, framework, weights)
    shapes, names = parse_input_shapes(input_shapes), parse_names(input_names)
    importer = get_importer(key)
    if onnx_model is None:
        onnx_model = importer.convert(model, weights, input_shapes=shapes, input_names=names)
    reference = importer.reference(model, weights, input_shapes=shapes, input_names=names)
    if hasattr(reference, "bind_onnx"):
        reference.bind_onnx(onnx_model)
    specs = model_input_specs(onnx_model)
    if data is None:
        batches: Any = _random_batches(specs, shapes, samples or DEFAULT_SAMPLES, seed)
    else:
        batches = batches_from(data, specs, batch_size=batch_size, iterations=samples, at_most=True)
    # every layer of a piece is held at once (both runtimes): pieces of bounded bytes, not batches
    chunker = Chunker(splittable=not any(s.batch_dim for s in specs))
    session = make_session(onnx_model)
    out_names = [o.name for o in onnx_model.graph.output]
    outputs = {n: TensorDiff(n, "output") for n in out_names}
    candidates = _layer_candidates(onnx_model, layers) if layers else []
    known = getattr(reference, "layer_names", None)  # a set/list, or a method; else run() skips unknown names
    known = known() if callable(known) else known
    if candidates and known is not None:
        known = set(known)
        candidates = [n for n in candidates if n in known]
    no_match = ConfigError(
        f"the {key} reference matched none of the converted model's layer names; "
        "per-layer compare needs layer names kept as ONNX node names."
    )
    if layers and not candidates:
        raise no_match
    layer_diffs: dict[str, TensorDiff] = {}
    tapped_session = None
    tapped_tensors: list[str] = []
    node_output = {n.name: n.output[0] for n in onnx_model.graph.node if n.name and n.output}
    seen = 0
    rename: dict[str, str] | None = None  # reference output name -> ONNX output name, when they differ
    pieces = (piece for batch in batches for piece in chunker.pieces(batch))
    for feeds in tqdm(pieces, desc="compare", unit="piece", disable=not progress, leave=False):
        feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        got = dict(zip(out_names, session.run(out_names, feeds)))
        ref = reference.run(feeds)
        if rename is None:
            rename = {}
            if ref and not set(ref) & set(out_names) and len(ref) == len(out_names):
                # converters may rename outputs (tf2onnx: 'Identity:0'); same count -> match in order
                log.warning("the %s reference names its outputs %s, the ONNX model %s; matching them in order",
                            key, list(ref), out_names)
                rename = dict(zip(ref, out_names))
        ref = {rename.get(k, k): v for k, v in ref.items()}
        held = [*got.values(), *ref.values()]
        for name, diff in outputs.items():
            if name in ref:
                diff.update(ref[name], got[name])
            elif not diff.note:
                diff.note = f"the {key} reference gave no output '{name}' (it gave {sorted(ref)[:5]})"
        if candidates:
            ref_layers = reference.run(feeds, layers=candidates)
            if tapped_session is None:
                from int8kit.calib.taps import activation_tensors, tap_model

                matched = [n for n in candidates if n in ref_layers]
                if not matched:
                    raise no_match
                layer_diffs = {n: TensorDiff(n, "layer") for n in matched}
                tapped_tensors = list(dict.fromkeys(node_output[n] for n in matched))
                tapped, _ = tap_model(onnx_model, tapped_tensors, activation_tensors(onnx_model))
                tapped_session = make_session(tapped, optimize=False)  # fusions would hide the tensors
            values = dict(zip(tapped_tensors, tapped_session.run(tapped_tensors, feeds)))
            for name, diff in layer_diffs.items():
                if name in ref_layers:
                    diff.update(ref_layers[name], values[node_output[name]])
            held += [*ref_layers.values(), *values.values()]
        chunker.returned(held, feeds)
        seen += len(next(iter(feeds.values()))) if feeds else 0
    if seen == 0:
        raise DataError("the compare data yielded no samples; pass data with at least one sample.")
    label = str(model) if isinstance(model, (str, os.PathLike)) else f"<{type(model).__name__}>"
    result = CompareResult(key, label, seen, float(tolerance), data is None, list(outputs.values()), list(layer_diffs.values()))
    for d in result.outputs + result.layers:
        d.judge(tolerance)
    skipped = len(candidates) - len(layer_diffs)
    if layers and skipped:
        log.info("%d of %d ONNX nodes have no matching layer in the %s model (e.g. nodes one layer became)",
                 skipped, len(candidates), key)
    return result
