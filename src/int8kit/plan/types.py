"""The quantization plan: what the planner decides and the emitter and record writers read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from int8kit.numerics import INT_RANGES, dequantize, quantize  # noqa: F401  (INT_RANGES: the plan's dtypes are its keys)



@dataclass
class TensorQuant:
    """How one tensor is quantized.

    ``scale``/``zero_point`` are scalars (per-tensor) or 1-D arrays along ``axis`` (per-channel).
    ``values`` holds the already-quantized integers for weights and biases (``None`` for
    activations, which are quantized at run time by QuantizeLinear).
    """

    name: str
    kind: str  # "activation" | "weight" | "bias"
    dtype: str  # key of INT_RANGES
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    method: str = ""
    lo: float = 0.0  # clipping range chosen
    hi: float = 0.0
    min: float = 0.0  # observed extremes
    max: float = 0.0
    values: np.ndarray | None = None
    # Activations only depthwise convs read: QuantizeLinear's step per channel (axis 1). ``scale``
    # and ``zero_point`` are then those of the DequantizeLinear the convs read, whose weights
    # carry the factors ``channel_step / scale`` (see plan/channel_scales.py).
    channel_step: np.ndarray | None = None

    def stored(self, signed_storage: bool = False) -> tuple[str, np.ndarray]:
        """The dtype and zero point the model holds: a symmetric int8 activation is written as
        the same grid in uint8, zero point + 128 (onnxruntime's fast path), unless the plan keeps
        signed storage (TensorRT)."""
        if self.kind == "activation" and self.dtype == "int8" and not signed_storage:
            return "uint8", np.asarray(self.zero_point).astype(np.int32) + 128
        return self.dtype, np.asarray(self.zero_point)

    def dequantized(self) -> np.ndarray:
        """The float32 values a DequantizeLinear of this constant's ``values`` produces (the emitter
        writes them so for a conv that runs in float)."""
        return dequantize(self.values, self.scale, self.zero_point, self.axis)

    def integers_of(self, dequantized: np.ndarray) -> np.ndarray:
        """The ``values`` that ``dequantized()`` turned into ``dequantized``."""
        return quantize(dequantized, self.scale, self.zero_point, self.dtype, self.axis)

    @property
    def threshold(self) -> float:
        """The symmetric threshold the vendor tools print: ``max(|lo|, |hi|)``."""
        return float(max(abs(self.lo), abs(self.hi)))


@dataclass(frozen=True)
class HardSwishForm:
    """``y = x * clip(x + shift, 0, top) * factor`` as one model writes it: the HardSwish op
    (3, 6, 1/6), ``x * HardSigmoid(x)`` (beta/alpha, 1/alpha, alpha) or Add-Clip-Mul[-Div].
    ``nodes`` are the nodes that compute it, in order; ``y`` is the last one's output."""

    x: str
    y: str
    nodes: tuple[str, ...]
    shift: float
    top: float
    factor: float


@dataclass
class QuantPlan:
    """Per-tensor decisions for one model.

    ``tensors`` maps tensor names to their quantization; a tensor absent from it stays float.
    ``fused`` maps the name of a removed Relu/Clip node to the tensor it read (its effect is the
    saturation of that tensor's QuantizeLinear). ``float_nodes`` lists nodes kept in float by
    rule or by the user, with the reason, for the report. ``integer_hardswish`` maps the output of
    each HardSwish the emitter writes as an INT8 Add and Mul to its form (see plan/integer_ops.py).
    """

    tensors: dict[str, TensorQuant] = field(default_factory=dict)
    fused: dict[str, str] = field(default_factory=dict)
    float_nodes: dict[str, str] = field(default_factory=dict)
    integer_hardswish: dict[str, HardSwishForm] = field(default_factory=dict)
    signed_storage: bool = False  # write int8 activations as int8 (TensorRT), not as shifted uint8
    # fused Relu/Clip stay nodes before their QuantizeLinear: signed storage cannot clip at 0, and a
    # 9-15 bit grid in a 16-bit type saturates past the Clip's bound
    keep_activation_nodes: bool = False
    # onnxruntime's plain form: a conv planned INT8 that cannot fuse into QLinearConv (a float layer
    # reads its output) runs in float, so its weights are written as float constants (emit/qdq.py);
    # not where activation nodes stay (the signed form keeps its convs' INT8 weights for TensorRT)
    float_weights_when_unfused: bool = False
    # biases left float (OpenVINO, TensorRT: no INT32 bias DequantizeLinear), by initializer name,
    # with the mean shift of weight rounding already removed
    float_biases: dict[str, np.ndarray] = field(default_factory=dict)
    # --th-method auto: per activation, the method that won and every candidate's estimated reader
    # error (plan/method_choice.py), for quant.json
    method_choices: dict[str, dict] = field(default_factory=dict)
