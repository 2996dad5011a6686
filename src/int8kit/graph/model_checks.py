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
    if half:
        name, kind = half[0]
        raise ModelError(
            f"the model computes in {kind} (tensor '{name}' and {len(half) - 1} more); int8kit quantizes FP32 models, "
            "export or convert the model to float32 first."
        )
