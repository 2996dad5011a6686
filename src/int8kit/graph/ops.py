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

import onnx


@dataclass(frozen=True)
class OpInfo:
    """How one op type is quantized."""

    role: str
    activation_inputs: tuple[int, ...] = (0,)
    weight_input: int | None = None
    weight_axis: int | None = None  # output-channel axis of the weight (negative: from the end)
    bias_input: int | None = None
    # (attribute, axis): the weight axis when that attribute is set (Gemm's transB=1 -> axis 0)
    weight_axis_if: tuple[str, int] | None = None
    # the weight is a 2-D matrix (MatMul, Gemm): onnxruntime runs MatMulIntegerToFloat / QGemm
    # with a float output, so the output is quantized only for a quantized reader
    matrix: bool = False
    weight_may_be_activation: bool = False  # MatMul: activation x activation runs in INT8 too
    bias_may_be_row: bool = False  # Gemm: a (1, N) bias broadcasts like a 1-D one
    # ConvTranspose: with groups the axis-1 channels repeat per group, so one scale per tensor
    per_tensor_if_grouped: bool = False
    # fusable Clip: the input holding the lower bound, which must be the constant 0
    lower_bound_input: int | None = None
    # onnxruntime's CPU provider has an integer kernel for the QDQ form (ConvTranspose: none, it
    # computes in float on dequantized weights)
    int8_kernel: bool = True
    # kept float but fed only by DequantizeLinear, onnxruntime fuses DQ -> op -> Q back into its
    # integer kernel (QLinearAdd, ...): a float one must read the float sources
    refused_from_dq: bool = False
    # kept float with a float weight but a DequantizeLinear input, onnxruntime quantizes the
    # weight per tensor by itself (its WeightBiasQuantization pass)
    ort_quantizes_float_weight: bool = False

    @property
    def integer_conv(self) -> bool:
        """onnxruntime can run it as QLinearConv (MatMul/Gemm run integer with a float output, and
        ConvTranspose has no integer kernel at all)."""
        return self.role == COMPUTE and not self.matrix and self.int8_kernel

    def channel_axis(self, node: onnx.NodeProto, weight_rank: int) -> int:
        """The weight's output-channel axis for ``node`` (a rank-``weight_rank`` weight)."""
        axis = self.weight_axis if self.weight_axis is not None else 0
        if self.weight_axis_if is not None:
            attr, when_set = self.weight_axis_if
            if next((a.i for a in node.attribute if a.name == attr), 0):
                axis = when_set
        return axis % weight_rank


COMPUTE, BINARY, VARIADIC, SHARED, UNARY, FUSABLE = (
    "compute",
    "binary",
    "variadic",
    "shared",
    "unary",
    "fusable_activation",
)

OP_TABLE: dict[str, OpInfo] = {
    "Conv": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=0, bias_input=2, ort_quantizes_float_weight=True),
    "ConvTranspose": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=1, bias_input=2, per_tensor_if_grouped=True,
                           int8_kernel=False, ort_quantizes_float_weight=True),
    "Gemm": OpInfo(COMPUTE, (0,), weight_input=1, weight_axis=1, bias_input=2, weight_axis_if=("transB", 0),
                   matrix=True, bias_may_be_row=True, ort_quantizes_float_weight=True),
    "MatMul": OpInfo(COMPUTE, (0, 1), weight_input=1, weight_axis=-1, matrix=True, weight_may_be_activation=True),
    "Add": OpInfo(BINARY, (0, 1), refused_from_dq=True),
    "Mul": OpInfo(BINARY, (0, 1), refused_from_dq=True),
    "Concat": OpInfo(VARIADIC, (), refused_from_dq=True),
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
    "Clip": OpInfo(FUSABLE, lower_bound_input=1),
}


# Facts about ops that stay float, which the planner's rules read.
BOUNDED_OUTPUT = frozenset({"Softmax", "Sigmoid", "HardSigmoid", "Tanh"})  # output range fixed by construction
NORMALIZATIONS = frozenset({"LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization"})
# one output value per input value, in place: a chain of them keeps a tensor's channel layout
ELEMENTWISE = frozenset({"Relu", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu",
                         "Selu", "Mish"})
LOOKUPS = frozenset({"Gather", "GatherElements", "GatherND"})  # read a table (an embedding) by index
SHAPE_READERS = frozenset({"Shape", "Size"})  # read only the size of their input, never its values
CONV = "Conv"  # the one op whose weights take per-input-channel steps and that has depthwise/stem forms


def op_info(op_type: str) -> OpInfo | None:
    """The table entry for ``op_type``, or ``None`` when the op runs in float."""
    return OP_TABLE.get(op_type)
