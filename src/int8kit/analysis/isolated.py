"""One quantized layer run alone: the node (and the Relu/Clip fused into it) as a one-node ONNX
model, fed the FP32 model's own input tensors, with its inputs and/or its weights quantized as a
``QuantPlan`` says.

This is how ``analysis.sensitivity`` measures a layer's *isolated* error without quantizing and
evaluating the whole model once per layer: every layer reads exact FP32 inputs, so its error is
its own, not what earlier layers passed on.

A layer is every node the plan runs in INT8 (it reads a planned activation or weight). What the
layer owns: the quantization of the tensors it reads (activation inputs, weight, bias). Its
output's quantization belongs to its readers, so no error is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from int8kit.calib.taps import activation_tensors
from int8kit.graph.ops import COMPUTE, FUSABLE, op_info
from int8kit.graph.passes.linear import conv_group, conv_input_index
from int8kit.numerics import dequantize, quantize
from int8kit.plan.types import QuantPlan, TensorQuant
from int8kit.runtime.session import make_session


@dataclass
class Layer:
    """One INT8 node of a plan, as the sensitivity analysis runs it."""

    node: onnx.NodeProto
    inputs: list[str]  # activation inputs (graph inputs of the one-node model)
    quantized_inputs: list[str]  # those the plan quantizes
    weights: list[str]  # planned weight/bias initializers the node reads
    output: str  # the tensor compared: the node's output, or that of the Relu/Clip fused into it
    fused: onnx.NodeProto | None = None
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # every initializer the node(s) read
    int8: bool = True  # False: a float op reading quantized tensors (HardSwish, Softmax): it owns their error

    @property
    def name(self) -> str:
        return self.node.name


def plan_layers(model: onnx.ModelProto, plan: QuantPlan) -> list[Layer]:
    """The nodes that read what ``plan`` quantizes, in graph order: the INT8 nodes, and the float
    ops fed by a DequantizeLinear (a HardSwish between two INT8 convs), which own the error of the
    tensors they read (``Layer.int8`` tells them apart). ``model``: the (optimized) FP32 model the
    plan was made for. Nodes with non-float inputs or outputs (shape arithmetic) are left out."""
    floats = activation_tensors(model)
    integer = {n for form in plan.integer_hardswish.values() for n in form.nodes}
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    fused_by_input: dict[str, onnx.NodeProto] = {}
    by_name = {n.name: n for n in model.graph.node}
    for act_name, src in plan.fused.items():
        if act_name in by_name:
            fused_by_input[src] = by_name[act_name]
    layers = []
    for node in model.graph.node:
        info = op_info(node.op_type)
        if (info is not None and info.role == FUSABLE) or node.name in plan.float_nodes or node.name in plan.fused:
            continue
        acts = [i for i in node.input if i and i not in inits]
        if any(i in consts for i in acts):
            continue  # exporter Constant nodes: not a tensor the reference holds
        planned = [i for i in node.input if i in plan.tensors]
        if not planned:
            continue
        fused = fused_by_input.get(node.output[0]) if node.output else None
        output = fused.output[0] if fused is not None else node.output[0]
        if output not in floats or any(i not in floats for i in acts):
            continue
        weights = [i for i in node.input if i in inits and i in plan.tensors and plan.tensors[i].kind in ("weight", "bias")]
        weights += [i for i in node.input if i in plan.float_biases and i not in weights]
        reads = [i for n in (node, fused) if n is not None for i in n.input if i in inits]
        constants = {i: numpy_helper.to_array(inits[i]) for i in reads}
        layers.append(Layer(node, acts, [i for i in acts if i in plan.tensors], weights, output, fused, constants,
                            int8=info is not None or node.name in integer))
    return layers


def fake_quantize(x: np.ndarray, tq: TensorQuant) -> np.ndarray:
    """``x`` as the INT8 model sees it after QuantizeLinear + DequantizeLinear. A tensor with
    per-channel steps (depthwise convs, plan/channel_scales.py) is rounded on those steps; the
    emitted model folds the step/scale ratio into the conv's weights, which ``layer_weights`` undoes."""
    x = np.asarray(x, dtype=np.float32)
    if tq.channel_step is not None:
        return dequantize(quantize(x, tq.channel_step, tq.zero_point, tq.dtype, axis=1), tq.channel_step, tq.zero_point, axis=1)
    axis = tq.axis if np.size(tq.scale) > 1 else None
    return dequantize(quantize(x, tq.scale, tq.zero_point, tq.dtype, axis=axis), tq.scale, tq.zero_point, axis=axis)


def layer_weights(layer: Layer, plan: QuantPlan) -> dict[str, np.ndarray]:
    """The layer's weight and bias as the INT8 model computes with them (dequantized, with bias
    correction), in the units of its FP32 input."""
    out: dict[str, np.ndarray] = {}
    x = plan.tensors.get(layer.node.input[0]) if layer.node.input else None
    for name in layer.weights:
        fp = layer.constants[name]
        if name in plan.float_biases:
            out[name] = np.asarray(plan.float_biases[name], np.float32).reshape(fp.shape)
            continue
        tq = plan.tensors[name]
        if tq.values is None:
            continue  # a record without values (rebuilt from quant.json and nothing to read them from)
        axis = tq.axis if np.size(tq.scale) > 1 else None
        w = dequantize(np.asarray(tq.values), tq.scale, tq.zero_point, axis=axis).reshape(fp.shape)
        if tq.kind == "weight" and x is not None and x.channel_step is not None and layer.node.op_type == "Conv":
            gain = x.channel_step.astype(np.float64) / float(x.scale)  # undo the factor emit folds into the weights
            index = conv_input_index(w.shape, conv_group(layer.node))
            w = (w / gain[index].reshape(index.shape + (1,) * (w.ndim - 2))).astype(np.float32)
        out[name] = w.astype(np.float32)
    return out


def layer_macs(layer: Layer, output_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample of one layer (``node_macs``)."""
    info = op_info(layer.node.op_type)
    weight = None
    if info is not None and info.weight_input is not None and len(layer.node.input) > info.weight_input:
        weight = layer.constants.get(layer.node.input[info.weight_input])
    return node_macs(layer.node, weight, output_shape)


def node_macs(node: onnx.NodeProto, weight: np.ndarray | None, output_shape: tuple[int, ...] | None) -> int:
    """Multiply-accumulates per sample: output elements x weight elements per output element
    (Conv, ConvTranspose, Gemm, MatMul with a constant weight); 0 for other ops or unknown shapes."""
    info = op_info(node.op_type)
    if info is None or info.role != COMPUTE or weight is None or output_shape is None:
        return 0
    dims = [d for d in output_shape[1:]]
    if any(not isinstance(d, (int, np.integer)) or d <= 0 for d in dims):
        return 0
    out = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if info.matrix:
        k = weight.shape[-2] if node.op_type == "MatMul" else weight.size // weight.shape[info.channel_axis(node, weight.ndim)]
        return out * int(k)
    return out * int(weight.size // weight.shape[info.channel_axis(node, weight.ndim)])


def layer_sessions(layer: Layer, model: onnx.ModelProto, quantized_weights: dict[str, np.ndarray]) -> tuple:
    """Two onnxruntime sessions of the layer alone: FP32 weights, and the plan's weights (the same
    session when the layer has none)."""
    fp = make_session(_one_node_model(layer, model, {}), threads=1)
    q = make_session(_one_node_model(layer, model, quantized_weights), threads=1) if quantized_weights else fp
    return fp, q


def _one_node_model(layer: Layer, model: onnx.ModelProto, replace: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes = [layer.node] + ([layer.fused] if layer.fused is not None else [])
    inputs = [helper.make_tensor_value_info(i, onnx.TensorProto.FLOAT, None) for i in layer.inputs]
    inits = [numpy_helper.from_array(replace.get(n, v), n) for n, v in layer.constants.items()]
    graph = helper.make_graph(nodes, f"layer_{layer.name}", inputs,
                              [helper.make_tensor_value_info(layer.output, onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def suffix_model(model: onnx.ModelProto, tensor: str, output: str) -> onnx.ModelProto | None:
    """``model`` computing ``output`` with ``tensor`` fed from outside (its producer removed): the
    rest of the FP32 model after one layer, to carry that layer's error to the model's output.
    Other branches (skip connections) still run from the model's own inputs. Nodes nothing reads
    are dropped. ``None`` when ``output`` does not depend on ``tensor``."""
    g = model.graph
    needed, keep = {output}, []
    for node in reversed(g.node):
        if any(o in needed for o in node.output) and tensor not in node.output:
            keep.append(node)
            needed.update(i for i in node.input if i)
    if tensor not in needed:
        return None
    keep.reverse()
    inits = [t for t in g.initializer if t.name in needed]
    inputs = [i for i in g.input if i.name in needed and i.name != tensor]
    inputs.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    outs = [o for o in g.output if o.name == output] or [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)]
    graph = helper.make_graph(keep, f"after_{tensor}", inputs, outs, inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
