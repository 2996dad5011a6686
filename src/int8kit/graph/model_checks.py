"""What a model must be before calibration: FP32, not already quantized."""

from __future__ import annotations

import onnx

from int8kit.errors import ModelError

# Ops that only appear in a model something has quantized already.
_QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
}
_HALF_TYPES = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


def check_float_model(model: onnx.ModelProto) -> None:
    """Raise ``ModelError`` for a model that is already quantized or computes in float16/bfloat16:
    int8kit calibrates and quantizes the FP32 original."""
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in _QUANTIZED_OPS})
    if quantized:
        raise ModelError(
            f"the model is already quantized (it holds {', '.join(quantized)} nodes); expected the FP32 model, "
            "quantize the original one (an INT8 model goes to 'int8kit eval' as the second model)."
        )
    half = [(t.name, _HALF_TYPES[t.data_type]) for t in model.graph.initializer if t.data_type in _HALF_TYPES]
    half += [(v.name, _HALF_TYPES[v.type.tensor_type.elem_type]) for v in model.graph.input
             if v.type.tensor_type.elem_type in _HALF_TYPES]
    half += _double_tensors(model)
    if half:
        name, kind = half[0]
        raise ModelError(
            f"the model computes in {kind} (tensor '{name}' and {len(half) - 1} more); int8kit quantizes FP32 models, "
            "export or convert the model to float32 first."
        )


def _double_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """float64 graph inputs and outputs, and float64 weights that feed anything but a Cast: the
    INT8 model would feed doubles to QuantizeLinear, which onnxruntime refuses to load. (A double
    constant cast to float at once is harmless and stays allowed.)"""
    double = onnx.TensorProto.DOUBLE
    found = [(v.name, "float64") for v in [*model.graph.input, *model.graph.output] if v.type.tensor_type.elem_type == double]
    weights = {t.name for t in model.graph.initializer if t.data_type == double}
    found += [(name, "float64") for name in sorted({i for n in model.graph.node if n.op_type != "Cast" for i in n.input if i in weights})]
    return found
