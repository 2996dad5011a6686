"""Which planned-INT8 convs onnxruntime will still run in float.

onnxruntime runs a Conv as QLinearConv only when DequantizeLinear feeds its input and weight and
its output goes to one QuantizeLinear alone. A conv whose output a float layer also reads (float
convs read the unquantized tensor: emit/qdq.py) keeps its dequantized input but runs in float, as
FP32 does (the emitter writes its weights as float constants, so its input alone tells it was
planned INT8). The search and the speed check count those as float: floating one depthwise conv of
EfficientNet-Lite0 takes the expand conv before it along (two float convs, not one).
"""

from __future__ import annotations

import onnx

from int8kit.graph.graphview import GraphView
from int8kit.graph.ops import op_info
from int8kit.plan.types import QuantPlan

RUNS_IN_FLOAT = "a float layer reads its output unquantized, so onnxruntime runs it in float too"
# signed int8 (zero point 0) reaches below 0, so a Relu/Clip cannot fold into the QuantizeLinear after it
ACTIVATION_KEPT = "its Relu/Clip stays a node between it and its QuantizeLinear, so onnxruntime runs it in float"
_ACTIVATIONS = ("Relu", "Clip")


def integer_conv(node: onnx.NodeProto) -> bool:
    """A conv onnxruntime can run as QLinearConv (``OpInfo.integer_conv``)."""
    info = op_info(node.op_type)
    return info is not None and info.integer_conv


def convs_run_in_float(int8: onnx.ModelProto) -> list[str]:
    """Names of the convs of an emitted QDQ model whose input and weight are dequantized but whose
    output does not go to exactly one QuantizeLinear (so no integer kernel), in graph order."""
    return list(unfused_convs(int8))


def unfused_convs(int8: onnx.ModelProto) -> dict[str, str]:
    """``convs_run_in_float``, each with why: a float reader of its output, or a Relu/Clip kept as a node."""
    view = GraphView(int8.graph)

    def dequantized(tensor: str) -> bool:
        node = view.producer(tensor)
        return node is not None and node.op_type == "DequantizeLinear"

    out = {}
    for node in int8.graph.node:
        if not integer_conv(node) or len(node.input) < 2:
            continue
        if not dequantized(node.input[0]):
            continue  # reads a float tensor: a float layer, counted by the plan
        # its weight is dequantized, or written as float constants (emit/qdq.py) because it runs in float
        reader = view.sole_consumer(node.output[0])
        if reader is not None and reader.op_type in _ACTIVATIONS and _quantized(view, reader.output[0]):
            out[node.name] = ACTIVATION_KEPT
        elif not _quantized(view, node.output[0]):
            out[node.name] = RUNS_IN_FLOAT
    return out


def _quantized(view: GraphView, tensor: str) -> bool:
    """Exactly one QuantizeLinear reads ``tensor``, and nothing else."""
    reader = view.sole_consumer(tensor)
    return reader is not None and reader.op_type == "QuantizeLinear"


def float_in_onnxruntime(int8: onnx.ModelProto, plan: QuantPlan) -> dict[str, str]:
    """The plan's float nodes and the convs ``convs_run_in_float`` finds, each with why."""
    out = dict(plan.float_nodes)
    out.update({name: why for name, why in unfused_convs(int8).items() if name not in out})
    return out


def float_as_run(int8: onnx.ModelProto, plan: QuantPlan, inputs_only: bool) -> dict[str, str]:
    """The float nodes as the model's runtime runs them: ``float_in_onnxruntime`` for the default
    form; the plan's own for the inputs-only form of ``--target openvino/tensorrt``, whose runtimes
    run a conv in INT8 with a float output."""
    return dict(plan.float_nodes) if inputs_only else float_in_onnxruntime(int8, plan)
