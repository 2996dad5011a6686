"""What the API verbs return, and where ``quantize`` writes its outputs.

``quantize`` has three output modes, chosen by ``output_dir`` and ``output``:

- a folder (the default ``int8kit-out``): the full set of five files, replaced as one unit;
- ``output="model_int8.onnx"``: the INT8 model file only;
- ``output_dir=None``: nothing written; ``result.model`` holds the INT8 ModelProto (the search
  and scripts that go on in memory use this).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from int8kit.calib.stats import Stats
from int8kit.config import QuantConfig, RunConfig
from int8kit.errors import ConfigError
from int8kit.plan.types import QuantPlan

DEFAULT_OUTPUT_DIR = "int8kit-out"
OUTPUT_SUFFIXES = ("_int8.onnx", "_fp32_optimized.onnx", "_quant.json", "_calibration_table.txt", "_trt_calib.cache")


class _Unset:
    def __repr__(self) -> str:
        return repr(DEFAULT_OUTPUT_DIR)


UNSET: Any = _Unset()  # output_dir not given: the default folder, unless ``output`` names a file


@dataclass
class OptimizeResult:
    """What ``optimize`` did."""

    model: onnx.ModelProto
    path: Path | None
    log: list[str]


@dataclass
class CalibrateResult:
    """Statistics of one calibration pass, and where they were saved."""

    stats: Stats
    path: Path | None
    seconds: float


@dataclass
class QuantizeResult:
    """The INT8 model, its plan, the paths of what ``quantize`` wrote (``None``: not written) and
    how long each stage took."""

    model: onnx.ModelProto  # the INT8 QDQ model
    optimized_model: onnx.ModelProto  # the FP32 graph it was built from
    plan: QuantPlan
    run_config: RunConfig  # every option of the run, resolved (``save_config`` writes it)
    int8_model: Path | None = None
    fp32_optimized_model: Path | None = None
    quant_json: Path | None = None
    calibration_table: Path | None = None
    tensorrt_cache: Path | None = None
    int4_deploy_model: Path | None = None  # SNQ weights as 4-bit indices + codebooks (emit/int4_deploy.py)
    timings: dict[str, float] = field(default_factory=dict)
    optimize_log: list[str] = field(default_factory=list)
    bias_tuned: int = 0  # convs whose INT32 bias --bias-tuning moved
    speed: Any = None  # analysis.speed.SpeedCheck: INT8 vs FP32 latency (None: not checked)

    @property
    def config(self) -> QuantConfig:
        """The quantization configuration the plan was made with."""
        return self.run_config.quant

    def parameters(self) -> dict[str, dict[str, Any]]:
        """Per-tensor quantization parameters as plain Python values."""
        out = {}
        for name, tq in self.plan.tensors.items():
            dtype, zero_point = tq.stored(self.plan.signed_storage)  # as the model holds them
            out[name] = {
                "kind": tq.kind,
                "dtype": dtype,
                "scale": tq.scale.tolist(),
                "zero_point": zero_point.tolist(),
                "axis": tq.axis,
                "method": tq.method,
                "threshold": tq.threshold,
                "min": tq.min,
                "max": tq.max,
            }
        return out


def output_paths(output_dir: Any, output: Any, stem: str) -> dict[str, Path]:
    """The files ``quantize`` writes, by suffix (empty: in memory only)."""
    if output is not None:
        if not isinstance(output, (str, os.PathLike)) or Path(output).suffix.lower() != ".onnx":
            raise ConfigError(f"output names the INT8 model file and must end in .onnx, got {output!r}; "
                              "for the full set of five outputs pass a folder as output_dir (-o FOLDER).")
        if output_dir is not UNSET and output_dir is not None:
            raise ConfigError(f"output ({output}) writes the INT8 model alone and output_dir ({output_dir}) the full set; "
                              "give one of them.")
        return {"_int8.onnx": Path(output)}
    if output_dir is UNSET:
        output_dir = DEFAULT_OUTPUT_DIR
    if output_dir is None:
        return {}
    if not isinstance(output_dir, (str, os.PathLike)):
        raise ConfigError(f"output_dir must be a folder path (or None: keep the result in memory), got {output_dir!r}.")
    if Path(output_dir).suffix.lower() == ".onnx":
        raise ConfigError(f"output_dir '{output_dir}' ends in .onnx but names the folder for five outputs; "
                          "pass output='{output_dir}' (CLI: -o with a .onnx name) for the INT8 model alone, or a folder.")
    return {s: Path(output_dir) / f"{stem}{s}" for s in OUTPUT_SUFFIXES}


def run_config_of(config: Any) -> RunConfig:
    """The run configuration ``quantize(config=...)`` starts from: a QuantConfig, a RunConfig,
    a ``--save-config`` file or a quant.json record."""
    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, QuantConfig):
        return RunConfig(quant=config)
    if isinstance(config, (str, os.PathLike)):
        return RunConfig.load(config)
    raise ConfigError(f"config must be a QuantConfig, a RunConfig or a configuration file path, got {type(config).__name__}.")


def write_outputs(result: QuantizeResult, names: dict[str, Path], model_name: str, save_config: Any) -> QuantizeResult:
    """Write the files ``names`` asks for (inside the caller's ``outputs_together``)."""
    from int8kit.emit.records import tensor_order, write_calibration_table, write_quant_json, write_tensorrt_cache
    from int8kit.emit.int4_deploy import int4_deploy, snq_weights
    from int8kit.graph.io import save_model

    if save_config is not None:
        result.run_config.save(save_config)
    if "_int8.onnx" in names:
        result.int8_model = save_model(result.model, names["_int8.onnx"])
    if "_fp32_optimized.onnx" not in names:
        return result
    order = tensor_order(result.optimized_model)
    result.fp32_optimized_model = save_model(result.optimized_model, names["_fp32_optimized.onnx"])
    result.quant_json = write_quant_json(result.plan, names["_quant.json"], model_name=model_name,
                                         config=result.run_config.to_dict(), order=order)
    result.calibration_table = write_calibration_table(result.plan, names["_calibration_table.txt"], order=order)
    result.tensorrt_cache = write_tensorrt_cache(result.plan, names["_trt_calib.cache"])
    snq = snq_weights(result.plan)
    if snq:  # --weight-algo snq: also the deploy form, beside the fake-quant INT8 model
        path = names["_int8.onnx"].with_name(names["_int8.onnx"].name.replace("_int8.onnx", "_int4_deploy.onnx"))
        result.int4_deploy_model = save_model(int4_deploy(result.model, snq), path)
    return result
