"""Op knowledge as data: how each ONNX op type takes part in INT8 quantization.

One table, read by the planner, the calibrator (which tensors to tap) and the emitter. The roles:

- ``compute``: has a weight input that is quantized (per-channel on ``weight_axis``), an optional
  INT32 bias, quantized activation inputs and a quantized output. onnxruntime fuses the QDQ
  pattern into QLinearConv / QLinearMatMul / ...
- ``binary``: elementwise with two activation inputs (Add, Mul); runs as QLinearAdd/QLinearMul.
- ``variadic``: Concat; inputs may differ in range (QLinearConcat re-scales) unless
  ``--fold-concat-scale`` gives them the output's range.
- ``shared``: moves or selects values without changing them (MaxPool, Reshape, Transpose...): the
  output keeps the input's scale and zero point, so no re-quantization happens.
- ``unary``: a quantized kernel exists (QLinearSigmoid, QLinearAveragePool...): input and output
  both quantized with their own ranges.
- ``fusable_activation``: Relu / Clip directly after a compute op are removed and realised by the
  saturation of the output's QuantizeLinear (the output range starts at 0).
Everything not in the table runs in float: its inputs are dequantized, its outputs are quantized
only if a quantized consumer needs them (documented in README, "What runs in INT8").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpInfo:
    """How one op type is quantized."""

    role: str
    activation_inputs: tuple[int, ...] = (0,)
    weight_input: int | None = None
    weight_axis: int | None = None  # output-channel axis of the weight
    bias_input: int | None = None


COMPUTE, BINARY, VARIADIC, SHARED, UNARY, FUSABLE = (
    "compute",
    "binary",
    "variadic",
    "shared",
    "unary",
    "fusable_activation",
)

OP_TABLE: dict[str, OpInfo] = {
    "Conv": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=0, bias_input=2),
    "ConvTranspose": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=1, bias_input=2),
    # Gemm's weight axis depends on transB; the planner resolves it (see weight_axis_of).
    "Gemm": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=1, bias_input=2),
    "MatMul": OpInfo(COMPUTE, (0, 1), weight_input=1, weight_axis=-1),
    "Add": OpInfo(BINARY, (0, 1)),
    "Mul": OpInfo(BINARY, (0, 1)),
    "Concat": OpInfo(VARIADIC, ()),
    "MaxPool": OpInfo(SHARED),
    "Reshape": OpInfo(SHARED),
    "Transpose": OpInfo(SHARED),
    "Flatten": OpInfo(SHARED),
    "Squeeze": OpInfo(SHARED),
    "Unsqueeze": OpInfo(SHARED),
    "Slice": OpInfo(SHARED),
    "Split": OpInfo(SHARED),
    "Gather": OpInfo(SHARED),
    "Resize": OpInfo(SHARED),
    "DepthToSpace": OpInfo(SHARED),
    "SpaceToDepth": OpInfo(SHARED),
    "Expand": OpInfo(SHARED),
    "Pad": OpInfo(SHARED),
    "AveragePool": OpInfo(UNARY),
    "GlobalAveragePool": OpInfo(UNARY),
    "Sigmoid": OpInfo(UNARY),
    "LeakyRelu": OpInfo(UNARY),
    "Relu": OpInfo(FUSABLE),
    "Clip": OpInfo(FUSABLE),
}


def op_info(op_type: str) -> OpInfo | None:
    """The table entry for ``op_type``, or ``None`` when the op runs in float."""
    return OP_TABLE.get(op_type)
