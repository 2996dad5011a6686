"""Fold inference-mode ``BatchNormalization`` into the Conv/ConvTranspose/Gemm/MatMul before it."""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper

from int8kit.graph.graphview import GraphView
from int8kit.graph.passes.linear import find_unit, fold_unless_blocked

logger = logging.getLogger(__name__)


def _bn_affine(view: GraphView, bn: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """BN as ``y * s + t`` per channel, or ``None`` if it is not a constant inference-mode BN."""
    attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
    if attrs.get("training_mode", 0) or attrs.get("spatial", 1) == 0 or len(bn.input) < 5:
        return None
    if any(o and (view.consumers_of(o) or view.is_graph_output(o)) for o in bn.output[1:]):
        return None  # running statistics are read: training graph
    params = [view.get_array(name) for name in bn.input[1:5]]
    if any(p is None or p.ndim != 1 for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def fold_batchnorm(model: onnx.ModelProto, log: list[str], no_fuse: Collection[str] = ()) -> int:
    """Fold every BN whose input comes only from a linear op with constant weights; returns count.

    A BN after MatMul is folded only when the MatMul output is known to be 2-D, because BN
    normalises axis 1 and MatMul's channels are on the last axis.
    """
    view = GraphView(model.graph)
    folded = 0
    for bn in view.nodes_of_type("BatchNormalization"):
        unit = find_unit(view, bn.input[0])
        affine = _bn_affine(view, bn) if unit is not None else None
        if unit is None or affine is None:
            continue
        scale, shift = affine
        if scale.shape[0] != unit.channels or (unit.channel_axis == -1 and unit.out_rank != 2):
            continue
        folded += fold_unless_blocked(view, unit, bn, scale, shift, no_fuse, log)
    view.commit()
    return folded
