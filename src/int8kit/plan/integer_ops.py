"""Float ops that the QDQ model can still run in integer arithmetic, rewritten by the emitter.

onnxruntime has no INT8 HardSwish: between two QLinearConvs it dequantizes, runs HardSwish as a
float HardSigmoid and Mul, and quantizes again, which on PP-LCNet (28 HardSwish) costs more than
the INT8 convs save (INT8 as slow as FP32). Each form ``y = x * clip(x + shift, 0, top) * factor``
(plan/hardswish.py) is written as

    gate = Q(x + shift, scale top/255)          QLinearAdd: saturating to [0, 255] is the clip
    y    = x * DQ(gate, scale factor top/255)   QLinearMul

and both steps are onnxruntime INT8 kernels. For HardSwish the gate has 256 levels on [0, 1]: its
rounding moves ``y`` by at most ``|x| / 510`` for ``-3 < x < 3`` and not at all elsewhere (the
gate is exactly 0 or 1 there), well under the step of ``y``'s own 8-bit grid. Pure.
"""

from __future__ import annotations

import numpy as np

from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.hardswish import hardswish_forms
from int8kit.plan.types import HardSwishForm, QuantPlan, TensorQuant


def integer_hardswish(facts: GraphFacts, result: QuantPlan, user_float: set[str]) -> dict[str, HardSwishForm]:
    """HardSwish forms whose input and output are both 8-bit per-tensor activations, by output;
    none with a node the user keeps in float."""
    if result.signed_storage:  # the symmetric TensorRT form keeps the QDQ layout plain
        return {}
    out = {}
    for form in hardswish_forms(facts):
        if any(n in user_float for n in form.nodes) or form.x in facts.graph_inputs:
            continue
        if _per_tensor_8bit(result.tensors.get(form.x)) and _per_tensor_8bit(result.tensors.get(form.y)):
            out[form.y] = form
    return out


def _per_tensor_8bit(tq: TensorQuant | None) -> bool:
    return (
        tq is not None and tq.kind == "activation" and tq.dtype in ("int8", "uint8")
        and np.asarray(tq.scale).size == 1 and tq.channel_step is None
    )


def drop_inner_tensors(facts: GraphFacts, result: QuantPlan) -> None:
    """Tensors inside an integer HardSwish (a HardSigmoid's output the Mul would have read as INT8)
    disappear with its nodes, and so do their plans; the nodes leave the float list."""
    by_name = {n.name: n for n in facts.nodes}
    for form in result.integer_hardswish.values():
        for name in form.nodes:
            result.float_nodes.pop(name, None)
            for out in by_name[name].output:
                if out != form.y:
                    result.tensors.pop(out, None)
