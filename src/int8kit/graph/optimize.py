"""Graph optimisation before quantization (the vendor manual's ``graph_transform``).

``optimize_model`` runs, in order: node naming, Constant nodes to initializers, Identity/Dropout
removal, constant folding, static Pad folding into Conv, BatchNorm folding, Scale/Bias (Mul/Add) folding, dead-code removal and
shape inference. Folding BN and Scale layers into the convolution before it matters for INT8: the
folded weights get their own per-channel ranges, and one fewer activation has to be quantized.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection

import numpy as np
import onnx

from int8kit.errors import ConfigError
from int8kit.graph.passes.cleanup import remove_dead
from int8kit.graph.passes.const_fold import fold_constants as fold_constant_nodes
from int8kit.graph.passes.constants import constants_to_initializers
from int8kit.graph.passes.fold_bn import fold_batchnorm
from int8kit.graph.passes.fold_into_next import fold_affine_into_next
from int8kit.graph.passes.fold_pad import fold_pads
from int8kit.graph.passes.fuse_affine import fuse_affine
from int8kit.graph.passes.identity import remove_identities
from int8kit.graph.passes.naming import name_nodes
from int8kit.graph.passes.untie import untie_parameters

logger = logging.getLogger(__name__)


def _check_no_fuse(model: onnx.ModelProto, no_fuse: Collection[str]) -> set[str]:
    if isinstance(no_fuse, str):  # a bare string would be split into letters
        no_fuse = [no_fuse]
    names = {n.name for n in model.graph.node}
    for name in no_fuse:
        if name not in names:
            sample = ", ".join(sorted(names)[:5])
            raise ConfigError(
                f"no_fuse layer '{name}' is not a node of the model; expected a node name "
                f"(for example {sample}), check the spelling against the model's node names."
            )
    return set(no_fuse)


def infer_shapes(model: onnx.ModelProto, log: list[str]) -> onnx.ModelProto:
    """Drop value_info of tensors that no longer exist, then add onnx shape inference results.

    On failure (custom ops, >2 GB models, inconsistent shapes) the line is logged and the pruned
    model is returned as it is.
    """
    graph = model.graph
    alive = {o for n in graph.node for o in n.output}
    keep = [vi for vi in graph.value_info if vi.name in alive]
    if len(keep) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(keep)
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weight_data(model))
    except Exception as exc:  # the C++ checker raises several types
        line = f"shape inference failed, value_info not refreshed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        if line not in log:
            logger.warning(line)
            log.append(line)
        return model
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    del graph.output[:]
    graph.output.extend(inferred.graph.output)
    return model


def _without_weight_data(model: onnx.ModelProto, min_values: int = 1024) -> onnx.ModelProto:
    """The model with its large initializers reduced to name, type and dims.

    Shape inference needs the values of small constants only (Reshape shapes, Slice starts...);
    serialising 90 MB of MiniLM weights for it twice cost 0.7 s of a 1.3 s optimize.
    """
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) >= min_values:
            init = onnx.TensorProto(name=init.name, data_type=init.data_type, dims=init.dims)
        graph.initializer.append(init)
    return light


def optimize_model(
    model: onnx.ModelProto,
    *,
    no_fuse: Collection[str] = (),
    fold_constants: bool = True,
) -> tuple[onnx.ModelProto, list[str]]:
    """Return an optimised copy of ``model`` and a log of what was done, one line per change.

    ``no_fuse`` names nodes (a Conv/Gemm/MatMul or the BatchNormalization/Mul/Add after it) that
    must not be folded together; names are those after unnamed nodes got ``<OpType>_<index>``
    names. An unknown name raises ``ConfigError``. ``fold_constants=False`` keeps constant
    sub-expressions as nodes. The input proto is never modified; graph input and output names
    are kept.
    """
    out = copy.deepcopy(model)
    log: list[str] = []
    name_nodes(out, log)
    blocked = _check_no_fuse(out, no_fuse)
    constants_to_initializers(out, log)
    remove_identities(out, log)
    if fold_constants:
        fold_constant_nodes(out, log)
    # Before any fold rewrites a layer's weights: a shared weight would change for every reader.
    untie_parameters(out, log)
    # TF "same" padding (Pad -> Conv) becomes Conv pads: a Pad between Q/DQ blocks QLinearConv fusion.
    fold_pads(out, log, blocked)
    # Shape information tells which MatMul outputs are 2-D (needed to fold BN after MatMul).
    out = infer_shapes(out, log)
    # Alternate until stable: Conv -> Add -> BN folds the BN only once the Add is gone.
    while fold_batchnorm(out, log, blocked) + fuse_affine(out, log, blocked):
        pass
    # What is left (an affine after a HardSwish) goes forward into the convs that read it.
    fold_affine_into_next(out, log, blocked)
    remove_dead(out, log)
    out = infer_shapes(out, log)
    for line in log:
        logger.info(line)
    return out, log

