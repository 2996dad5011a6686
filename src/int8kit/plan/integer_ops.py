"""Float ops that the QDQ model can still run in integer arithmetic, rewritten by the emitter.

onnxruntime has no INT8 HardSwish: between two QLinearConvs it dequantizes, runs HardSwish as a
float HardSigmoid and Mul, and quantizes again, which on PP-LCNet (28 HardSwish) costs more than
the INT8 convs save (INT8 as slow as FP32). Written as

    gate = Q(x + 3, scale 6/255)        QLinearAdd: saturation to [0, 255] is the Clip(0, 6)
    y    = x * DQ(gate, scale 1/255)    QLinearMul: the gate read as clip(x + 3, 0, 6) / 6

both steps are onnxruntime INT8 kernels. The gate has 256 levels on [0, 1]: its rounding moves
``y`` by at most ``|x| / 510`` for ``-3 < x < 3`` and not at all elsewhere (the gate is exactly 0
or 1 there), well under the step of ``y``'s own 8-bit grid. Pure: the plan in, node names out.
"""

from __future__ import annotations

import numpy as np

from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.types import QuantPlan, TensorQuant


def integer_hardswish_nodes(facts: GraphFacts, result: QuantPlan) -> set[str]:
    """HardSwish nodes whose input and output are both 8-bit per-tensor activations in ``result``."""
    if result.signed_storage:  # the symmetric TensorRT form keeps the QDQ layout plain
        return set()
    out = set()
    for node in facts.nodes:
        if node.op_type != "HardSwish" or node.name in result.float_nodes:
            continue
        x, y = result.tensors.get(node.input[0]), result.tensors.get(node.output[0])
        if node.input[0] in facts.graph_inputs or not (_per_tensor_8bit(x) and _per_tensor_8bit(y)):
            continue
        out.add(node.name)
    return out


def _per_tensor_8bit(tq: TensorQuant | None) -> bool:
    return (
        tq is not None and tq.kind == "activation" and tq.dtype in ("int8", "uint8")
        and np.asarray(tq.scale).size == 1 and tq.channel_step is None
    )
