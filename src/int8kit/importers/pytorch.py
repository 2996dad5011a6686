"""PyTorch to ONNX: a TorchScript file or ``package.module:factory``, exported with ``torch.onnx.export``.

Defaults: opset 17, the TorchScript-based exporter (``dynamo=False``: stable node names that follow
the module tree), a dynamic batch axis, inputs ``input``/``input0..``, outputs ``output``/``output0..``,
and BatchNorm kept as its own node (the manual wants BatchNorm unfolded in the FP32 model;
``int8kit optimize`` folds it later). After export the ONNX model is run in onnxruntime against
torch on seeded random inputs; a mismatch is an error, not a silent bad model.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from int8kit.errors import ConfigError, ModelError
from int8kit.importers.common import Shape, default_input_names

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-3  # max abs error relative to the largest reference value


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise ConfigError("PyTorch models need the 'torch' package; pip install torch and retry.") from None
    return torch


def _split_factory(spec: str) -> tuple[str, str] | None:
    head, sep, tail = spec.rpartition(":")
    if sep and len(head) > 1 and tail.isidentifier() and not Path(spec).exists():
        return head, tail
    return None


def _import_factory(target: str, attr: str) -> Any:
    """``package.module`` (importable) or ``path/to/file.py``, then its attribute ``attr``."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ModelError(f"factory module file '{path}' does not exist; check the path in '{target}:{attr}'.")
        name = f"int8kit_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # like `python -m`: modules in the working folder are importable
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ModelError(
                f"cannot import module '{target}' for '{target}:{attr}' ({exc}); expected an importable "
                "package.module (installed or on PYTHONPATH) or a path to a .py file."
            ) from None
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ModelError(f"module '{target}' has no '{attr}'; it defines {public[:12]}; pass one of those as ':factory'.")
    return getattr(module, attr)


def load_module(model: str | os.PathLike | Any, weights: str | os.PathLike | None = None) -> Any:
    """The model as an eval-mode ``torch.nn.Module``: an ``nn.Module`` as is, a TorchScript file, or a factory."""
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        module = model
    else:
        text = str(model)
        factory = _split_factory(text)
        if factory is not None:
            with contextlib.redirect_stdout(sys.stderr):  # a factory's prints must not break --json output
                fn = _import_factory(*factory)
                module = fn() if callable(fn) and not isinstance(fn, torch.nn.Module) else fn
            if not isinstance(module, torch.nn.Module):
                raise ModelError(
                    f"'{text}' returned a {type(module).__name__}; expected a torch.nn.Module (a factory called "
                    "without arguments, or a module instance)."
                )
        else:
            path = Path(text)
            if not path.exists():
                raise ModelError(f"model file '{path}' does not exist; check the path.")
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # torch raises RuntimeError/ValueError for non-archives
                raise ModelError(
                    f"'{path}' is not a TorchScript archive ({str(exc).splitlines()[0][:160]}); save the model with "
                    "torch.jit.script(model).save(path) or torch.jit.trace(model, x).save(path), or pass "
                    "package.module:factory that builds it."
                ) from None
    if weights is not None:
        _load_weights(torch, module, Path(weights))
    return module.eval()


def _load_weights(torch: Any, module: Any, path: Path) -> None:
    """A state dict (``torch.save(model.state_dict())`` or a checkpoint with a ``state_dict`` key)."""
    if not path.exists():
        raise ModelError(f"weights file '{path}' does not exist; check the path.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # no pickled code runs
    except Exception as exc:
        raise ModelError(
            f"weights file '{path}' is not a loadable state dict ({str(exc).splitlines()[0][:160]}); "
            "save it with torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelError(f"weights file '{path}' holds a {type(state).__name__}; expected a state dict of tensors.")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:200] if lines else "mismatch"
        raise ModelError(
            f"weights file '{path}' does not fit the model ({detail}); "
            "pass the state dict saved from this architecture."
        ) from None


def example_inputs(shapes: Sequence[Shape], seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal float32 arrays of the given shapes."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def _flatten(out: Any) -> list[Any]:
    """Model outputs as a flat list of tensors (tuples/lists nested in any depth)."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, Mapping):
        raise ModelError("the model returns a dict; expected a tensor or a tuple of tensors, wrap it to return a tuple.")
    return [out]


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _run_torch(module: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    torch = _torch()
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
    return [t.detach().cpu().numpy() for t in _flatten(out)]


def _need_shapes(input_shapes: Sequence[Shape] | None) -> Sequence[Shape]:
    if not input_shapes:
        raise ConfigError(
            "PyTorch models do not record their input shapes; pass --input-shapes, e.g. '(1,3,224,224)' "
            "(several inputs: '(1,3,224,224);(1,4)')."
        )
    return input_shapes


def _drop_initializer_identities(model: onnx.ModelProto) -> None:
    """The exporter can leave ``Identity(weight)`` nodes; consumers read the weight directly instead."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return
    keep = [n for n in g.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del g.node[:]
    g.node.extend(keep)


def _export(module: Any, shapes: Sequence[Shape], names: list[str], outputs: list[str], *, opset: int,
            dynamic_batch: bool, keep_batchnorm: bool) -> onnx.ModelProto:
    torch = _torch()
    args = tuple(torch.from_numpy(a) for a in example_inputs(shapes))
    axes = {n: {0: "N"} for n in names + outputs} if dynamic_batch else None
    buffer = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
            torch.onnx.export(module, args, buffer, opset_version=opset, dynamo=False, training=mode,
                              input_names=names, output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise ModelError(
            f"torch.onnx.export failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:240]}); "
            "check --input-shapes, or export the model to ONNX yourself and pass the .onnx file."
        ) from None
    model = onnx.load_from_string(buffer.getvalue())
    _drop_initializer_identities(model)
    return model


def parity(module: Any, model: onnx.ModelProto, shapes: Sequence[Shape], *, seed: int = 1) -> list[tuple[str, float, float]]:
    """(output, max abs error, max abs error / max |torch|) of onnxruntime vs torch on seeded inputs."""
    from int8kit.runtime.session import make_session

    arrays = example_inputs(shapes, seed=seed)
    names = [vi.name for vi in model.graph.input]
    want = [o.name for o in model.graph.output]
    got = make_session(model).run(want, dict(zip(names, arrays)))
    ref = _run_torch(module, arrays)
    rows = []
    for name, a, b in zip(want, ref, got):
        if a.shape != b.shape:
            raise ModelError(f"exported output '{name}' has shape {b.shape} but torch gives {a.shape}; the export is wrong.")
        err = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        rows.append((name, err, err / scale if scale > 0 else err))
    return rows


def convert(
    model: str | os.PathLike | Any,
    weights: str | os.PathLike | None = None,
    *,
    input_shapes: Sequence[Shape] | None = None,
    input_names: Sequence[str] | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    keep_batchnorm: bool = True,
    check: bool = True,
    **options: Any,
) -> onnx.ModelProto:
    """Export a PyTorch model to ONNX and check it against torch (see the module docstring).

    ``model``: a TorchScript file, ``package.module:factory`` / ``file.py:factory`` (called without
    arguments), or an ``nn.Module``; ``weights``: an optional state dict for a factory's module.
    """
    if options:
        raise ConfigError(f"option(s) {sorted(options)} do not apply to PyTorch models; drop them.")
    shapes = _need_shapes(input_shapes)
    module = load_module(model, weights)
    names = default_input_names(len(shapes), input_names)
    try:
        count = len(_run_torch(module, example_inputs(shapes)))
    except ModelError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"the PyTorch model fails on inputs of shapes {list(shapes)} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200]}); check --input-shapes."
        ) from None
    onnx_model = _export(module, shapes, names, output_names(count), opset=opset,
                         dynamic_batch=dynamic_batch, keep_batchnorm=keep_batchnorm)
    if check:
        probe = [(2, *s[1:]) for s in shapes] if dynamic_batch else list(shapes)  # batch 2 exercises the dynamic axis
        for name, err, rel in parity(module, onnx_model, probe):
            log.info("parity %s: max abs error %.3g (relative %.3g)", name, err, rel)
            if not rel <= PARITY_TOLERANCE:
                raise ModelError(
                    f"the exported ONNX output '{name}' differs from torch by {err:.3g} (relative {rel:.3g} > "
                    f"{PARITY_TOLERANCE}); the model likely has input-dependent control flow that tracing froze, "
                    "script it (torch.jit.script) or pass check=False to keep it anyway."
                )
    return onnx_model


def module_scope(node_name: str) -> str | None:
    """The dotted module name an exported node belongs to ('' for the root, None if not a scoped name).

    Node names look like ``/layer1/layer1.0/conv1/Conv`` (nn.Module) or ``/layer1/0/conv1/Conv``
    (TorchScript): components are either full dotted names or one attribute name each.
    """
    if not node_name.startswith("/"):
        return None
    parts = node_name[1:].split("/")[:-1]  # the last part is the op type (+ _N)
    full = ""
    for part in parts:
        full = part if "." in part or not full else f"{full}.{part}"  # a dotted part is already a full name
    return full


def layer_modules(node_names: Sequence[str], module_names: set[str]) -> dict[str, str]:
    """ONNX node name -> module whose output it is: the last node (graph order) inside that module's
    scope; where one node ends several nested modules, the innermost one."""
    last: dict[str, str] = {}
    for node in node_names:
        scope = module_scope(node)
        while scope:  # this node is (so far) the last one inside scope and each enclosing module
            if scope in module_names:
                last[scope] = node
            scope = scope.rpartition(".")[0]
    mapping: dict[str, str] = {}
    for module in sorted(last, key=lambda m: m.count(".")):  # deeper modules overwrite their parents
        mapping[last[module]] = module
    return mapping


class TorchReference:
    """The PyTorch model in torch; layers (ONNX node names) are read with forward hooks."""

    def __init__(self, module: Any, input_names: list[str]):
        self.module = module
        self.input_names = input_names
        self._node_names: list[str] | None = None

    def bind_onnx(self, model: onnx.ModelProto) -> None:
        """Learn the converted graph's node order (needed to map nodes to modules)."""
        self._node_names = [n.name for n in model.graph.node if n.name]

    def _arrays(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ConfigError(f"inputs {missing} are missing from the data; the model takes {self.input_names}.")
        return [np.asarray(feeds[n], dtype=np.float32) for n in self.input_names]

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs as ``output``/``output0..`` or, with ``layers``, each mapped module's output."""
        arrays = self._arrays(feeds)
        if layers is None:
            outs = _run_torch(self.module, arrays)
            return dict(zip(output_names(len(outs)), outs))
        torch = _torch()
        if isinstance(self.module, torch.jit.ScriptModule):
            raise ConfigError(
                "per-layer compare of a TorchScript file is not possible (TorchScript modules take no forward "
                "hooks); pass package.module:factory to compare layers, or use --compare for the outputs."
            )
        modules = dict(self.module.named_modules())
        mapping = layer_modules(self._node_names or list(layers), set(modules) - {""})
        wanted = {node: mapping[node] for node in layers if node in mapping}
        if not wanted:
            raise ConfigError(
                "no ONNX node name maps to a PyTorch module (per-layer compare needs the exporter's "
                "'/module/path/Op' node names); compare the outputs with --compare instead."
            )
        captured: dict[str, list[np.ndarray]] = {}
        handles = []
        for node, name in wanted.items():
            def hook(_mod: Any, _inp: Any, out: Any, key: str = node) -> None:
                first = _flatten(out)[0]
                captured.setdefault(key, []).append(first.detach().cpu().numpy())
            handles.append(modules[name].register_forward_hook(hook))
        try:
            _run_torch(self.module, arrays)
        finally:
            for h in handles:
                h.remove()
        # a module called more than once (a shared activation) has no single output to compare
        return {node: values[0] for node, values in captured.items() if len(values) == 1}


def reference(
    model: str | os.PathLike | Any,
    weights: str | os.PathLike | None = None,
    *,
    input_shapes: Sequence[Shape] | None = None,
    input_names: Sequence[str] | None = None,
) -> TorchReference:
    """The original model in torch, fed by the converted model's input names."""
    shapes = _need_shapes(input_shapes)
    return TorchReference(load_module(model, weights), default_input_names(len(shapes), input_names))
