"""OpenVINO (CPU) behind the small part of onnxruntime's session interface int8kit uses.

``OpenVinoSession(model).run(None, feed)`` returns the outputs as a list of arrays, in the model's
output order, so latency turns and evaluations run the same code on either runtime. OpenVINO is an
optional extra (``pip install openvino``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from int8kit.errors import ConfigError, ModelError

RUNTIMES = ("onnxruntime", "openvino")
# OpenVINO's CPU plugin runs float layers in its own default precision (bf16 on CPUs with AMX or
# AVX512-BF16); "f32" asks for float32, the precision the FP32 model is judged in.
PRECISIONS = ("default", "f32")


@dataclass(frozen=True)
class _Arg:
    """What ``get_inputs()``/``get_outputs()`` give: a name (as onnxruntime's NodeArg)."""

    name: str


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoSession:
    """An OpenVINO compiled model on the CPU, run like an onnxruntime session."""

    def __init__(self, model: onnx.ModelProto | str | os.PathLike, *, threads: int | None = 1, precision: str = "default",
                 profile: bool = False):
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("the openvino runtime needs the openvino package; pip install openvino, "
                              "or use --runtime onnxruntime.") from None
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if profile:
            config["PERF_COUNT"] = "YES"  # per-node counters of the last run (last_run_profile)
        core = ov.Core()
        try:
            source = core.read_model(model.SerializeToString(), b"") if isinstance(model, onnx.ModelProto) else str(model)
            self._compiled = core.compile_model(source, "CPU", config)
        except Exception as exc:
            name = "the model" if isinstance(model, onnx.ModelProto) else f"model '{model}'"
            raise ModelError(f"OpenVINO cannot compile {name} ({str(exc).splitlines()[0][:300]}); "
                             "expected an ONNX model OpenVINO supports, or use --runtime onnxruntime.") from None
        self._request = self._compiled.create_infer_request()
        self._inputs = [_Arg(p.any_name) for p in self._compiled.inputs]
        self._ports = list(self._compiled.outputs)
        self._outputs = [_Arg(p.any_name) for p in self._ports]  # OpenVINO keeps the ONNX tensor names

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs ``names`` (``None``: all) for one feed, as arrays that outlive the next run."""
        result = self._request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        by_name = {o.name: np.array(result[port]) for o, port in zip(self._outputs, self._ports)}
        return [by_name[n] for n in ([o.name for o in self._outputs] if names is None else names)]

    def last_run_profile(self) -> list[tuple[str, str, float]]:
        """(node, "type (precision)", microseconds) of each node the last run executed (needs ``profile=True``);
        nodes fused into another are not executed and not listed."""
        import openvino as ov

        return [(p.node_name, f"{p.node_type} ({p.exec_type.rsplit('_', 1)[-1]})", p.real_time.total_seconds() * 1e6)
                for p in self._request.get_profiling_info() if p.status == ov.ProfilingInfo.Status.EXECUTED]

    @property
    def runtime_ops(self) -> int:
        """Operations of the compiled model (fewer: more was fused)."""
        return len(self._compiled.get_runtime_model().get_ops())


def session_for(model: onnx.ModelProto | str | os.PathLike, runtime: str = "onnxruntime", *,
                threads: int | None = None, precision: str = "default") -> Any:
    """A session with ``run(names, feed)`` / ``get_inputs()`` / ``get_outputs()`` on ``runtime``."""
    if runtime == "openvino":
        return OpenVinoSession(model, threads=threads, precision=precision)
    if runtime != "onnxruntime":
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}.")
    from int8kit.runtime.session import make_session

    return make_session(model, threads=threads)


def runtime_version(runtime: str) -> str:
    """The version of ``runtime`` (keys cached references: another version may compute differently)."""
    if runtime == "openvino":
        import openvino

        return f"openvino {openvino.__version__}"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"
