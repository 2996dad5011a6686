"""TensorFlow, PaddlePaddle and TFLite through their well-kept ONNX converters (optional packages).

int8kit does not reimplement these converters: when the converter is importable it is called,
otherwise one error names the package to install. The reference runtimes for ``--compare`` are
the frameworks' own (TensorFlow, Paddle Inference, the TFLite interpreter) and need them installed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from int8kit.errors import ConfigError, ModelError
from int8kit.importers.common import Shape

OPSET = 17


def _need(module: str, pip_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the Python package '{pip_name}' ({exc}); pip install {pip_name} and retry, "
            "or convert the model to ONNX yourself and pass the .onnx file."
        ) from None


def _finish(model: onnx.ModelProto, what: str, input_shapes: Sequence[Shape] | None,
            input_names: Sequence[str] | None) -> onnx.ModelProto:
    """Apply the common ONNX normalisation (checker, opset >= 13, shapes, names) to a converter's output."""
    from int8kit.importers import onnx_import

    try:
        return onnx_import.convert(model, input_shapes=input_shapes, input_names=input_names)
    except ModelError as exc:
        raise ModelError(f"the {what} converter wrote a model int8kit cannot use: {exc}") from None


def _failed(what: str, exc: Exception) -> ModelError:
    first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
    return ModelError(f"the {what} converter failed ({type(exc).__name__}: {first}); check the model files and the converter's version.")


# --- TensorFlow (tf2onnx) ---------------------------------------------------------------------------

def _tf_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    """A SavedModel folder, or a frozen ``.pb`` graph with ``input_names`` and ``outputs=[...]`` tensor names.

    Runs tf2onnx's documented command line (``python -m tf2onnx.convert``) in a subprocess.
    """
    _need("tensorflow", "tensorflow", "TensorFlow models")
    _need("tf2onnx", "tf2onnx", "TensorFlow models")
    path = Path(model)
    opset = int(options.pop("opset", OPSET))
    with tempfile.TemporaryDirectory(prefix="int8kit-tf-") as tmp:
        out = Path(tmp) / "model.onnx"
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--output", str(out), "--opset", str(opset)]
        if path.is_dir():
            cmd += ["--saved-model", str(path)]
        else:
            outputs = options.pop("outputs", None)
            if not input_names or not outputs:
                raise ConfigError(
                    "a frozen TensorFlow graph (.pb) names no inputs or outputs; pass --input-names with the graph's "
                    "input tensors (e.g. input:0) and outputs=[...] (e.g. logits:0), or use a SavedModel folder."
                )
            cmd += ["--graphdef", str(path), "--inputs", ",".join(input_names), "--outputs", ",".join(outputs)]
            input_names = None  # these are the graph's own names already
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelError(f"tf2onnx failed on '{path}' ({tail[0][:240]}); check the model and tf2onnx's version.")
        onnx_model = onnx.load(str(out))
    return _finish(onnx_model, "tf2onnx", input_shapes, input_names)


def _tf_reference(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None) -> Any:
    tf = _need("tensorflow", "tensorflow", "--compare for TensorFlow models")
    path = Path(model)
    if not path.is_dir():
        raise ConfigError("--compare for TensorFlow runs SavedModel folders only; convert the frozen graph and compare the ONNX outputs yourself.")
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = fn(**{k.split(":")[0]: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items()}

    return _OutputsOnly("TensorFlow", run)


# --- PaddlePaddle (paddle2onnx) ---------------------------------------------------------------------

def _paddle_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    """``model.pdmodel`` plus ``model.pdiparams`` (``--weights``, or the same stem beside it)."""
    paddle2onnx = _need("paddle2onnx", "paddle2onnx", "PaddlePaddle models")
    path = Path(model)
    params = Path(weights) if weights is not None else path.with_suffix(".pdiparams")
    if not params.exists():
        raise ConfigError(f"Paddle model '{path}' needs its parameters file; '{params}' does not exist, pass --weights model.pdiparams.")
    with tempfile.TemporaryDirectory(prefix="int8kit-paddle-") as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            paddle2onnx.export(str(path), str(params), save_file=str(out), opset_version=int(options.pop("opset", OPSET)))
        except Exception as exc:
            raise _failed("paddle2onnx", exc) from None
        model_proto = onnx.load(str(out))
    return _finish(model_proto, "paddle2onnx", input_shapes, input_names)


def _paddle_reference(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None) -> Any:
    inference = _need("paddle.inference", "paddlepaddle", "--compare for PaddlePaddle models")
    path = Path(model)
    params = Path(weights) if weights is not None else path.with_suffix(".pdiparams")
    predictor = inference.create_predictor(inference.Config(str(path), str(params)))

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in predictor.get_input_names():
            predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name]))
        predictor.run()
        return {n: predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()}

    return _OutputsOnly("PaddlePaddle", run)


# --- TFLite (tflite2onnx) ---------------------------------------------------------------------------

def _tflite_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    tflite2onnx = _need("tflite2onnx", "tflite2onnx", "TFLite models")
    with tempfile.TemporaryDirectory(prefix="int8kit-tflite-") as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            tflite2onnx.convert(str(model), str(out))
        except Exception as exc:
            raise _failed("tflite2onnx", exc) from None
        onnx_model = onnx.load(str(out))
    return _finish(onnx_model, "tflite2onnx", input_shapes, input_names)


def _tflite_reference(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None) -> Any:
    interpreter_cls = None
    for module, attr in (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                         ("tensorflow.lite", "Interpreter")):
        try:
            interpreter_cls = getattr(importlib.import_module(module), attr)
            break
        except ImportError:
            continue
    if interpreter_cls is None:
        raise ConfigError("--compare for TFLite models needs a TFLite interpreter; pip install ai-edge-litert and retry.")
    interp = interpreter_cls(model_path=str(model))
    interp.allocate_tensors()

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # tflite2onnx turns the NHWC graph into NCHW: feed TFLite the NHWC view, return 4-D outputs as NCHW
        nchw = False
        for detail in interp.get_input_details():
            x = np.asarray(feeds[detail["name"]], dtype=detail["dtype"])
            if x.ndim == 4 and tuple(x.shape) != tuple(detail["shape"]) and x.transpose(0, 2, 3, 1).shape == tuple(detail["shape"]):
                x, nchw = x.transpose(0, 2, 3, 1), True
            interp.set_tensor(detail["index"], np.ascontiguousarray(x))
        interp.invoke()
        outs = {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
        return {k: v.transpose(0, 3, 1, 2) if nchw and v.ndim == 4 else v for k, v in outs.items()}

    return _OutputsOnly("TFLite", run)


@dataclass
class _OutputsOnly:
    """A reference that runs a framework's own runtime for the model outputs (no per-layer taps)."""

    what: str
    _run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        if layers is not None:
            raise ConfigError(f"per-layer compare is not available for {self.what} models; use --compare for the outputs.")
        return self._run(feeds)


@dataclass(frozen=True)
class ExternalImporter:
    """``convert``/``reference`` pair of one framework handled by an external converter."""

    name: str
    convert: Callable[..., onnx.ModelProto]
    reference: Callable[..., Any]


tensorflow = ExternalImporter("tensorflow", _tf_convert, _tf_reference)
paddle = ExternalImporter("paddle", _paddle_convert, _paddle_reference)
tflite = ExternalImporter("tflite", _tflite_convert, _tflite_reference)
