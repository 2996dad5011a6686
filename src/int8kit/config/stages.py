"""The three stage configurations: what the planner reads (QuantConfig), how calibration reads
the data (CalibOptions), and steps that run the quantized model afterwards (TuneOptions)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from int8kit.config.base import CONFIG_VERSION, Params, _Options, name_list, option, unknown_key
from int8kit.config.layers import Overrides, as_overrides
from int8kit.errors import ConfigError

_FP_FIELDS = ("fp_inputs", "fp_outputs", "fp_blocks", "fp_layers", "fp_op_types")

# What each deployment target implies (--target): the QDQ form that runtime fuses into integer
# kernels, measured there. onnxruntime: int8kit's defaults. OpenVINO and TensorRT fuse a
# DequantizeLinear into the conv that reads it, so only compute inputs are quantized (a conv
# output feeding a float op stays float), biases stay float, and the onnxruntime-only rewrites
# (per-channel-step Muls, HardSwish as an INT8 Add and Mul) are off; TensorRT also takes only
# symmetric int8 activations.
TARGETS: dict[str, dict[str, Any]] = {
    "onnxruntime": {},
    # symmetric activations: without per-channel steps, the zero points of skewed tensors cost
    # PP-OCRv4 rec its exact match (bench_targets.py, scored in onnxruntime: 0.675 -> 0.870 with
    # skew_ratio 0; EfficientNet-Lite0 agreement 0.934 both times)
    "openvino": {"channel_scales": False, "integer_hardswish": False, "skew_ratio": 0.0},
    "tensorrt": {"channel_scales": False, "integer_hardswish": False, "signed_activations": True},
}

# Weight algorithms (AMCT wts_algo) and the one bit width each takes; SNQ's cluster initializations.
WEIGHT_BITS: dict[str, int] = {"arq": 8, "snq": 4}
SNQ_INITS: tuple[str, ...] = ("uniform", "gaussian", "d2sampling")


def _one_of(name: str, value: Any, allowed: Collection[str]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}{hint}")


@dataclass(frozen=True)
class QuantConfig(_Options):
    """Everything the planner needs besides the model and the statistics."""

    WHAT: ClassVar[str] = "quantization config"

    target: str = option("onnxruntime", "the runtime the INT8 model is for: onnxruntime, openvino or tensorrt; each gets "
                                        "the QDQ form it runs with integer kernels (openvino, tensorrt: float biases, "
                                        "quantized compute inputs only, no per-channel-step Muls or integer HardSwish; "
                                        "tensorrt: symmetric int8 activations)", metavar="RUNTIME")
    th_method: str = option("kl", "activation threshold method: max, percentile, kl, symkl, jsd, mse, admm, "
                                  "aciq_laplace, aciq_gauss, ifmr (the manuals' names such as PERCENTILE9999 too), "
                                  "or auto: per tensor, whichever of mse, kl, max its reading layers see least error "
                                  "from (recorded in quant.json method_choice)")
    th_params: Params = option(Params(), "extra threshold method parameter, repeatable", flag="--th-param",
                               metavar="KEY=VALUE")
    method_rules: bool = option(True, "apply --th-method to every activation (default: max for model inputs and "
                                      "bounded outputs, mse where kl/symkl/jsd would clip signed or one-sided "
                                      "tensors, mse or max where their range would give the readers over 10x the "
                                      "estimated error; overrides still apply)", off_flag="--no-method-rules")
    per_channel: bool = option(True, "one weight scale per tensor (the vendor tools' default; hurts depthwise convs)",
                               flag="--per-channel", off_flag="--per-tensor",
                               on_help="one weight scale per output channel (the default)")
    activation_offset: bool = option(False, "asymmetric activations with a zero point (AMCT with_offset)")
    bitwidth: int = option(8, "activation bits, 8 to 16; 9-16 are held in 16-bit types, e.g. 12: int12 steps saved "
                              "as int16 (onnxruntime has no 16-bit integer kernels: an accuracy reference, slower than FP32)")
    conv_group: bool = option(False, "group output channels of similar range, one weight scale per group")
    fold_concat_scale: bool = option(False, "give Concat inputs the output's scale")
    accuracy_opt: bool = option(False, "keep depthwise convolutions in float")
    bias_correction: bool = option(True, "do not correct the mean shift of weight rounding in the INT32 bias",
                                   off_flag="--no-bias-correction")
    channel_scales: bool = option(True, "one scale per tensor also for float-op outputs only convs read "
                                        "(default: one step per channel, folded into the conv weights)",
                                  off_flag="--no-channel-scales", aliases=("--no-depthwise-channel-scales",))
    integer_hardswish: bool = option(True, "run HardSwish in float between its QDQ pairs (default: as an INT8 Add "
                                           "and Mul, which onnxruntime runs with integer kernels)",
                                     off_flag="--float-hardswish")
    stem_float: bool = option(True, "also quantize a first conv with <= 4 input channels and the depthwise conv right "
                                    "after it (float by default: no speed-up, costly)", off_flag="--quantize-stem")
    signed_activations: bool = option(False, "symmetric int8 activations only (TensorRT's QDQ rule; --target tensorrt "
                                             "sets it); default: uint8 with zero points. onnxruntime's CPU kernels "
                                             "run int8 activations several times slower than uint8 on the same grid")
    outlier_ratio: float = option(2.0, "MatMul/Gemm whose input max exceeds this many 99.99th percentiles stay float (0: off)")
    skew_ratio: float = option(0.5, "signed tensors with |min|/max (or max/|min|) below this get a zero point (0: off)")
    weight_algo: str = option("arq", "weight quantization: arq (uniform INT8, AMCT arq_quantize) or snq (non-uniform "
                                     "INT4, AMCT snq_quantize: 16 levels per output channel by clustering, stored on the "
                                     "INT8 grid; needs --weight-bits 4; the first and last quantized layers stay arq)",
                              metavar="ALGO")
    weight_bits: int = option(8, "weight bits: 8 for arq, 4 for snq (the manual's only pairs)", metavar="BITS")
    snq_init: str = option("uniform", "snq cluster centres start evenly spaced over the channel's range (uniform), at "
                                      "quantiles of a normal fit (gaussian), or drawn k-means++ style, best of three "
                                      "seeded starts (d2sampling)", metavar="INIT")
    snq_iterations: int = option(1000, "snq: at most this many clustering iterations per channel, 500 to 2000", metavar="N")
    snq_min_distance: float = option(1e-10, "snq: stop clustering when no centre moves more than this (in INT8 steps), "
                                            "1e-10 to 1e-3", metavar="D")
    snq_keep_ends: bool = option(True, "also cluster the first and last quantized layers (default: they stay uniform "
                                       "INT8, as the AMCT manual recommends)", off_flag="--snq-all-layers")
    fp_inputs: tuple[str, ...] = option((), "these layers and all before them stay float (comma-separated)")
    fp_outputs: tuple[str, ...] = option((), "these layers and all after them stay float (comma-separated)")
    fp_blocks: tuple[str, ...] = option((), "from each layer to the next compute layer stays float (comma-separated)")
    fp_layers: tuple[str, ...] = option((), "these layers stay float (comma-separated)")
    fp_op_types: tuple[str, ...] = option((), "all layers of these op types stay float (comma-separated)")
    overrides: Overrides = option(Overrides(), "JSON file of per-layer th_method / th_params / th_scale / threshold / float",
                                  metavar="JSON")
    version: int = option(CONFIG_VERSION, "configuration format version", cli=False)

    def __post_init__(self) -> None:
        for name in _FP_FIELDS:
            object.__setattr__(self, name, name_list(getattr(self, name), name))
        if not isinstance(self.th_params, Mapping) or not all(isinstance(k, str) for k in self.th_params):
            raise ConfigError(f"th_params must be a mapping of parameter names to values, got {self.th_params!r}.")
        if not isinstance(self.overrides, Overrides):
            object.__setattr__(self, "overrides", as_overrides(self.overrides))
        self._check_types()
        self._apply_target()
        self._resolve_methods()
        self._check_values()

    def _apply_target(self) -> None:
        if self.target not in TARGETS:
            close = difflib.get_close_matches(str(self.target), list(TARGETS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}{hint}")
        if self.target == "tensorrt" and self.activation_offset:
            raise ConfigError("--target tensorrt takes symmetric int8 activations only, but --activation-offset asks for "
                              "zero points; drop one of them.")
        for name, value in TARGETS[self.target].items():
            object.__setattr__(self, name, value)

    @property
    def inputs_only(self) -> bool:
        """Quantize compute inputs only (a compute output only for a quantized reader), with float
        biases: the form OpenVINO and TensorRT fuse."""
        return self.target != "onnxruntime"

    def _resolve_methods(self) -> None:
        """Write the global method by its canonical name with the parameters an alias implies
        (PERCENTILE9999: percentile 99.99), so the record says what ran; a misspelt method or
        parameter fails here, before any work."""
        from int8kit.thresholds import check_params, resolve
        from int8kit.thresholds import override_method_name

        name, implied = resolve(self.th_method)
        params = Params({**implied, **self.th_params})
        check_params(name, params, "--th-param")
        object.__setattr__(self, "th_method", name)
        object.__setattr__(self, "th_params", params)
        for layer, ov in self.overrides.items():
            if ov.th_method:
                method = override_method_name(ov.th_method, name)
                resolve(method)
                if ov.th_params:
                    check_params(method, ov.th_params, f"the override for '{layer}'")

    def _check_values(self) -> None:
        if not 8 <= self.bitwidth <= 16:
            raise ConfigError(
                f"--bitwidth must be 8 to 16, got {self.bitwidth}; 9-16 bit activations are held in 16-bit types (e.g. 12)."
            )
        if self.signed_activations and self.activation_offset:
            raise ConfigError(
                "--signed-activations (symmetric int8, for TensorRT) and --activation-offset (zero points) "
                "contradict each other; choose one."
            )
        self._check_weight_algo()
        for name in ("outlier_ratio", "skew_ratio"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0 (0 disables the rule), got {value!r}.")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported; expected {CONFIG_VERSION}.")

    def _check_weight_algo(self) -> None:
        """The manual's pairs (uniform INT8, non-uniform INT4) and its SNQ ranges."""
        _one_of("weight_algo", self.weight_algo, WEIGHT_BITS)
        _one_of("snq_init", self.snq_init, SNQ_INITS)
        bits = WEIGHT_BITS[self.weight_algo]
        if self.weight_bits != bits:
            raise ConfigError(f"--weight-algo {self.weight_algo} quantizes weights to {bits} bits, got --weight-bits "
                              f"{self.weight_bits}; pass --weight-bits {bits} (uniform weights are 8-bit, snq 4-bit).")
        if not 500 <= self.snq_iterations <= 2000:
            raise ConfigError(f"snq_iterations (AMCT max_iteration) must be 500 to 2000, got {self.snq_iterations}; "
                              "1000 is the manual's default.")
        if not (math.isfinite(self.snq_min_distance) and 1e-10 <= self.snq_min_distance <= 1e-3):
            raise ConfigError(f"snq_min_distance (AMCT min_distance) must be 1e-10 to 1e-3, got {self.snq_min_distance!r}; "
                              "1e-10 is the manual's default.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["th_params"] = self.th_params.to_json()
        out["overrides"] = {k: v.to_dict() for k, v in self.overrides.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> "QuantConfig":
        if isinstance(raw, Mapping) and "depthwise_channel_scales" in raw:  # its name in records written before it covered every conv
            raw = dict(raw)
            raw.setdefault("channel_scales", raw.pop("depthwise_channel_scales"))
        if isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in ("bins", "bias_tuning")}  # stage options of version-1 records
        return super().from_dict(raw)


MIN_BINS, MAX_BINS = 512, 4096


@dataclass(frozen=True)
class CalibOptions(_Options):
    """How the calibration pass reads the data (``-dump_dist`` statistics depend on these)."""

    WHAT: ClassVar[str] = "calibration options"

    bins: int | None = option(None, "histogram bins per side, a power of two 512-4096 (default 2048; with --stats: "
                                    "the statistics' own, or fewer summed from them exactly)", flag="--th-binnum")
    iterations: int | None = option(None, "number of calibration samples to use (default: all)")
    batch_size: int | None = option(None, "samples per inference batch (default: up to 32 and at most 20 MB of input)",
                                    flag="--batch")

    DEFAULT_BINS: ClassVar[int] = 2048

    def __post_init__(self) -> None:
        self._check_types()
        if self.bins is not None and (self.bins < MIN_BINS or self.bins > MAX_BINS or self.bins & (self.bins - 1)):
            raise ConfigError(f"--th-binnum must be a power of two between {MIN_BINS} and {MAX_BINS}, got {self.bins}.")
        for name in ("iterations", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive number of samples, got {value}.")

    @property
    def histogram_bins(self) -> int:
        """The bins a new calibration pass uses."""
        return self.DEFAULT_BINS if self.bins is None else self.bins


@dataclass(frozen=True)
class TuneOptions(_Options):
    """Steps that run the quantized model on calibration samples after planning."""

    WHAT: ClassVar[str] = "tuning options"

    bias_tuning: int = option(0, "after quantizing, run the INT8 model on the first N calibration samples and move "
                                 "each conv's bias so its output mean matches FP32, in graph order (0: off; try 32 for "
                                 "deep networks whose accuracy swings with the calibration set; adds a fifth to two "
                                 "fifths to the time; the N samples are kept in memory, at most 2 GB)", metavar="N")

    weight_rounding: str = option("nearest", "how weights take their INT8 grid point: nearest, or gptq (each layer's "
                                             "weights rounded column by column with the rounding error moved onto the "
                                             "columns not yet rounded, so the layer's output error on the first 32 "
                                             "calibration samples is smallest; same scales and grid; needs --data)",
                                  metavar="MODE")
    update_bn: bool = option(False, "after quantizing (useful with --weight-algo snq), re-estimate each quantized conv's "
                                    "per-channel output mean and variance on calibration batches flowing through the "
                                    "quantized model and re-normalize it to FP32's (AMCT update_bn; BatchNorms are "
                                    "folded into the convs, so the update is folded into their scales and biases)")
    bn_update_iterations: int = option(30, "--update-bn: calibration batches to run, 1 to 999 (AMCT bn_update_iterations)",
                                       metavar="N")
    bn_moving_average_fraction: float = option(0.9, "--update-bn: weight of the old running statistics per batch, in (0, 1) "
                                                    "(AMCT bn_moving_average_fraction; the manual suggests 0.5 for its "
                                                    "large batches, int8kit's batches are 2 samples: 0.9 measured better)",
                                               metavar="F")
    bn_dump_dir: str | None = option(None, "--update-bn: write the updated per-channel statistics and factors here "
                                           "(bn_update.npz; AMCT bn_dump_dir)", metavar="DIR")

    def __post_init__(self) -> None:
        self._check_types()
        _one_of("weight_rounding", self.weight_rounding, ("nearest", "gptq"))
        if self.bias_tuning < 0:
            raise ConfigError(f"--bias-tuning takes a number of samples (0 turns it off), got {self.bias_tuning!r}; pass e.g. 32.")
        if not 0 < self.bn_update_iterations < 1000:
            raise ConfigError(f"bn_update_iterations must be 1 to 999 batches, got {self.bn_update_iterations}; 30 is the "
                              "manual's recommendation.")
        if not 0 < self.bn_moving_average_fraction < 1:
            raise ConfigError(f"bn_moving_average_fraction must be between 0 and 1 (exclusive), got "
                              f"{self.bn_moving_average_fraction!r}; e.g. 0.9 (int8kit's default) or 0.5 (the manual's).")
        if self.bn_dump_dir is not None and not isinstance(self.bn_dump_dir, str):
            raise ConfigError(f"bn_dump_dir must be a folder path, got {self.bn_dump_dir!r}.")


STAGES: tuple[type, ...] = (QuantConfig, CalibOptions, TuneOptions)


def field_default(cls: type, name: str) -> Any:
    """The default of one configuration field (the one place defaults live)."""
    f = {f.name: f for f in fields(cls)}[name]
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def split_options(options: Mapping[str, Any], *, stages: tuple[type, ...] = STAGES,
                  where: str = "quantize") -> list[dict[str, Any]]:
    """Keyword options by the stage that defines them (one dict per class of ``stages``);
    a name no stage defines fails with the nearest one."""
    out: list[dict[str, Any]] = [{} for _ in stages]
    owners = {f.name: i for i, cls in enumerate(stages) for f in fields(cls) if f.name != "version"}
    for key, value in options.items():
        if key not in owners:
            raise unknown_key(f"{where}()", key, sorted(owners))
        out[owners[key]][key] = value
    return out
