"""TensorFlow, PaddlePaddle and TFLite through their well-kept ONNX converters (optional packages).

int8kit does not reimplement these converters: when the converter is importable it is called,
otherwise one error names the package to install. The reference runtimes for ``--compare`` are
the frameworks' own (TensorFlow, Paddle Inference, the TFLite interpreter) and need them installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
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
_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "GLOG_minloglevel": "2"}  # the converters' C++ logs
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_PADDLE_SUFFIXES = (".pdmodel", ".json")
_PADDLE_HINT = ("paddle2onnx pins onnx<=1.17, so install it in a separate virtual environment, run int8kit convert "
                "there and quantize the .onnx file")


def _need(what: str, packages: Sequence[tuple[str, str]], hint: str = "") -> None:
    """Raise one error naming every missing ``(module, pip name)`` pair; imports nothing."""
    missing = [pip for module, pip in packages if importlib.util.find_spec(module) is None]
    if missing:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(
            f"{what} needs the Python package(s) {', '.join(missing)}, not installed here; pip install "
            f"{' '.join(pip for _, pip in packages)}{extra} and retry, or convert the model to ONNX yourself and pass the .onnx file."
        )


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


def _run_tool(cmd: list[str], out: Path, what: str, model: Path) -> onnx.ModelProto:
    """Run a converter's command line in a subprocess (its prints and logs stay out of int8kit's
    output, e.g. ``--json``) and load the ONNX file it wrote."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **_QUIET})
    if proc.returncode != 0 or not out.exists():
        text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr + "\n" + proc.stdout)  # colour codes
        lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 1]
        errors = [ln.split("[ERROR]")[-1].strip() for ln in lines if re.search(r"\[ERROR\]|^[\w.]*(Error|Exception)\b", ln)]
        reason = (errors or lines or ["no output"])[-1][:300]
        raise ModelError(f"{what} could not convert '{model}' ({reason}); check the model files and {what}'s version.")
    return onnx.load(str(out))


def _by_order(feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Feeds keyed by the runtime's own input names: as given when they match (``:0`` ignored),
    else in order (--input-names renamed the ONNX inputs)."""
    bare = {n.split(":")[0]: n for n in names}
    if all(k.split(":")[0] in bare for k in feeds):
        return {bare[k.split(":")[0]]: v for k, v in feeds.items()}
    if len(feeds) != len(names):
        raise ConfigError(f"the model takes inputs {list(names)} but the compare data gives {list(feeds)}; pass one array per input.")
    return dict(zip(names, feeds.values()))


# --- TensorFlow (tf2onnx) ---------------------------------------------------------------------------

def _graph_io(path: Path) -> tuple[list[str], list[str]]:
    """A frozen GraphDef's inputs (its Placeholders) and outputs (tensors no node consumes)."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except Exception:
        raise ModelError(f"'{path}' is not a frozen TensorFlow GraphDef; expected a .pb from a frozen graph, "
                         "or a SavedModel folder.") from None
    used = {ref.lstrip("^").split(":")[0] for node in graph.node for ref in node.input}
    skip = {"Const", "NoOp", "Placeholder", "Assert", "SaveV2", "RestoreV2", "VarHandleOp"}
    inputs = [f"{n.name}:0" for n in graph.node if n.op == "Placeholder"]
    outputs = [f"{n.name}:0" for n in graph.node if n.name not in used and n.op not in skip]
    return inputs, outputs


def _tf_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    """A SavedModel folder, a Keras ``.keras``/``.h5`` file, or a frozen ``.pb`` GraphDef.

    Runs tf2onnx's documented command line (``python -m tf2onnx.convert``). The ONNX inputs keep
    TensorFlow's layout (NHWC images). A frozen graph's inputs and outputs are its Placeholders and
    its unconsumed tensors unless ``input_names`` (graph tensor names, ``input:0``) and
    ``outputs=[...]`` say otherwise.
    """
    _need("converting a TensorFlow model", [("tensorflow", "tensorflow-cpu"), ("tf2onnx", "tf2onnx")])
    path = Path(model)
    opset = int(options.pop("opset", OPSET))
    with tempfile.TemporaryDirectory(prefix="int8kit-tf-") as tmp:
        out = Path(tmp) / "model.onnx"
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--output", str(out), "--opset", str(opset)]
        if path.is_dir():
            cmd += ["--saved-model", str(path)]
        elif path.suffix.lower() in _KERAS_SUFFIXES:
            cmd += ["--saved-model", _keras_to_saved_model(path, Path(tmp) / "saved_model")]
        else:
            graph_inputs, graph_outputs = _graph_io(path)
            inputs = [n if ":" in n else f"{n}:0" for n in input_names] if input_names else graph_inputs
            outputs = list(options.pop("outputs", None) or graph_outputs)
            if not inputs or not outputs:
                raise ConfigError(
                    f"cannot tell the inputs ({inputs}) or outputs ({outputs}) of the frozen graph '{path}'; pass "
                    "--input-names with its input tensors (e.g. input:0) and outputs=[...] (Python), or use a SavedModel folder."
                )
            cmd += ["--graphdef", str(path), "--inputs", ",".join(inputs), "--outputs", ",".join(outputs)]
            input_names = None  # these are the graph's own names already
        onnx_model = _run_tool(cmd, out, "tf2onnx", path)
    return _finish(onnx_model, "tf2onnx", input_shapes, input_names)


def _keras_to_saved_model(path: Path, folder: Path) -> str:
    """Export a Keras model file as a SavedModel (what tf2onnx reads); ``safe_mode`` stays on, so a
    file with pickled Python lambdas is refused rather than run."""
    import keras

    try:
        net = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ModelError(f"Keras could not load '{path}' ({str(exc).splitlines()[0][:240]}); expected a .keras/.h5 model file.") from None
    if hasattr(net, "export"):  # Keras 3
        net.export(str(folder), verbose=False)
    else:  # tf.keras 2
        import tensorflow as tf

        tf.saved_model.save(net, str(folder))
    return str(folder)


def _tf_reference(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None) -> Any:
    """TensorFlow itself on the original files, fed in the model's own layout (NHWC)."""
    _need("--compare for a TensorFlow model", [("tensorflow", "tensorflow-cpu")])
    import tensorflow as tf

    path = Path(model)
    if path.is_dir():
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        names = list(fn.structured_input_signature[1])

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = fn(**{k: tf.constant(v) for k, v in _by_order(feeds, names).items()})
            return {k: v.numpy() for k, v in out.items()}
    elif path.suffix.lower() in _KERAS_SUFFIXES:
        import keras

        net = keras.models.load_model(str(path), compile=False)
        names = [t.name for t in net.inputs]

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            xs = list(_by_order(feeds, names).values())
            out = net(xs if len(xs) > 1 else xs[0], training=False)
            outs = out if isinstance(out, (list, tuple)) else [out]
            return {f"output_{i}": np.asarray(o) for i, o in enumerate(outs)}
    else:
        graph = tf.compat.v1.GraphDef()
        graph.ParseFromString(path.read_bytes())
        graph_inputs, graph_outputs = _graph_io(path)
        names = [n if ":" in n else f"{n}:0" for n in input_names] if input_names else graph_inputs
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
        fn = wrapped.prune([wrapped.graph.get_tensor_by_name(n) for n in names],
                           [wrapped.graph.get_tensor_by_name(n) for n in graph_outputs])

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = fn(*[tf.constant(v) for v in _by_order(feeds, names).values()])
            return {n: o.numpy() for n, o in zip(graph_outputs, out)}

    return _OutputsOnly("TensorFlow", run, in_order=True)


# --- PaddlePaddle (paddle2onnx) ---------------------------------------------------------------------

def _paddle_files(model: str | os.PathLike, weights: Any) -> tuple[Path, Path]:
    path = Path(model)
    if path.suffix.lower() not in _PADDLE_SUFFIXES:
        raise ConfigError(f"Paddle model '{path}' should be the program file of paddle.jit.save (.json, or .pdmodel "
                          "before Paddle 3); pass that file as --model and the .pdiparams as --weights.")
    params = Path(weights) if weights is not None else path.with_suffix(".pdiparams")
    if not params.exists():
        raise ConfigError(f"Paddle model '{path}' needs its parameters file; '{params}' does not exist, pass --weights model.pdiparams.")
    return path, params


def _paddle_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    """``model.json`` (Paddle 3) or ``model.pdmodel`` plus ``model.pdiparams`` (``--weights``, or the same stem beside it)."""
    _need("converting a PaddlePaddle model", [("paddle", "paddlepaddle"), ("paddle2onnx", "paddle2onnx")], _PADDLE_HINT)
    path, params = _paddle_files(model, weights)
    with tempfile.TemporaryDirectory(prefix="int8kit-paddle-") as tmp:
        out = Path(tmp) / "model.onnx"
        cmd = [sys.executable, "-m", "paddle2onnx.command", "--model_dir", str(path.parent.resolve()),
               "--model_filename", str(path.resolve()), "--params_filename", str(params.resolve()),
               "--save_file", str(out), "--opset_version", str(int(options.pop("opset", OPSET)))]
        onnx_model = _run_tool(cmd, out, "paddle2onnx", path)
    return _finish(onnx_model, "paddle2onnx", input_shapes, input_names)


def _paddle_reference(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None) -> Any:
    """Paddle Inference on the original program and parameters."""
    _need("--compare for a PaddlePaddle model", [("paddle", "paddlepaddle")], _PADDLE_HINT)
    from paddle import inference

    path, params = _paddle_files(model, weights)
    config = inference.Config(str(path), str(params))
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    names = list(predictor.get_input_names())

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in _by_order(feeds, names).items():
            predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(value))
        predictor.run()
        return {n: predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()}

    return _OutputsOnly("PaddlePaddle", run, in_order=True)


# --- TFLite (tflite2onnx) ---------------------------------------------------------------------------

def _tflite_convert(model: str | os.PathLike, weights: Any, *, input_shapes=None, input_names=None, **options: Any) -> onnx.ModelProto:
    _need("converting a TFLite model", [("tflite2onnx", "tflite2onnx")])
    import tflite2onnx

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
    in_order: bool = False  # the converter keeps the output order but not the names
    _onnx_outputs: list[str] | None = None

    def bind_onnx(self, model: onnx.ModelProto) -> None:
        """Remember the converted model's output names (``compare`` calls this)."""
        self._onnx_outputs = [o.name for o in model.graph.output]

    def run(self, feeds: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        if layers is not None:
            raise ConfigError(f"per-layer compare is not available for {self.what} models; use --compare for the outputs.")
        out = self._run(feeds)
        names = self._onnx_outputs
        if self.in_order and names and len(names) == len(out) and not set(names) & set(out):
            return dict(zip(names, out.values()))
        return out


@dataclass(frozen=True)
class ExternalImporter:
    """``convert``/``reference`` pair of one framework handled by an external converter."""

    name: str
    convert: Callable[..., onnx.ModelProto]
    reference: Callable[..., Any]


tensorflow = ExternalImporter("tensorflow", _tf_convert, _tf_reference)
paddle = ExternalImporter("paddle", _paddle_convert, _paddle_reference)
tflite = ExternalImporter("tflite", _tflite_convert, _tflite_reference)
