"""SSD DetectionOutput built from ONNX ops (kept float): decode, per-class top-k + NMS, keep_top_k.

The output follows Caffe's layout, 1 x 1 x N x 7 rows of
``[image_id, label, confidence, xmin, ymin, xmax, ymax]``, ordered by image, then descending
confidence (ties keep the prior order), as OpenCV orders them (Caffe groups rows by label). With ``keep_top_k`` set, N is always
keep_top_k and rows after the detections are zero, as in OpenCV (a static output shape).
"""

from __future__ import annotations

import numpy as np

from int8kit.importers.caffe import proto
from int8kit.importers.caffe.registry import LayerContext

_CODE = proto.PriorBoxParameter


def _i64(ctx: LayerContext, name: str, values) -> str:
    return ctx.const(name, np.asarray(values, dtype=np.int64), np.int64)


def _half(ctx: LayerContext, x: str, first: bool) -> str:
    """The first or last two coordinates along the last axis."""
    start, end = (0, 2) if first else (2, 4)
    return ctx.node("Slice", [x, _i64(ctx, "s", [start]), _i64(ctx, "e", [end]), _i64(ctx, "ax", [-1])])


def decode_boxes(ctx: LayerContext, loc: str, priors: str, code_type: int, encoded: bool) -> str:
    """Decode location offsets (N x P*4) against priors (1 x 2 x P*4) into corner boxes N x P x 4."""
    loc = ctx.node("Reshape", [loc, _i64(ctx, "loc_shape", [0, -1, 4])])
    pv = ctx.node("Reshape", [priors, _i64(ctx, "prior_shape", [2, 1, -1, 4])])
    prior, var = ctx.multi("Split", [pv, _i64(ctx, "two", [1, 1])], 2, axis=0)
    prior = ctx.node("Squeeze", [prior, _i64(ctx, "ax0", [0])])
    var = ctx.node("Squeeze", [var, _i64(ctx, "ax0b", [0])])
    scaled = loc if encoded else ctx.node("Mul", [loc, var])
    if code_type == _CODE.CORNER:
        return ctx.node("Add", [prior, scaled])
    pmin, pmax = _half(ctx, prior, True), _half(ctx, prior, False)
    pwh = ctx.node("Sub", [pmax, pmin])
    if code_type == _CODE.CORNER_SIZE:
        size4 = ctx.node("Concat", [pwh, pwh], axis=-1)
        return ctx.node("Add", [prior, ctx.node("Mul", [scaled, size4])])
    pc = ctx.node("Mul", [ctx.node("Add", [pmin, pmax]), ctx.const("half", 0.5)])
    center = ctx.node("Add", [ctx.node("Mul", [_half(ctx, scaled, True), pwh]), pc])
    wh = ctx.node("Mul", [ctx.node("Exp", [_half(ctx, scaled, False)]), pwh])
    half_wh = ctx.node("Mul", [wh, ctx.const("half_b", 0.5)])
    return ctx.node("Concat", [ctx.node("Sub", [center, half_wh]), ctx.node("Add", [center, half_wh])], axis=-1)


def detection_output(ctx: LayerContext) -> None:
    """Build the DetectionOutput subgraph for bottoms (loc, conf, priors)."""
    p = ctx.layer.detection_output_param
    if not p.share_location:
        raise ctx.unsupported("share_location: false")
    if p.nms_param.eta != 1:
        raise ctx.unsupported("adaptive NMS (eta != 1)")
    columns = _select(ctx, p)
    if p.keep_top_k >= 0:  # the best keep_top_k detections over all classes
        count = ctx.node("Shape", [columns[0]])
        keep = ctx.node("Min", [count, _i64(ctx, "keep_top_k", [p.keep_top_k])])
        _, best = ctx.multi("TopK", [columns[0], keep], 2)
        columns = [ctx.node("Gather", [t, best], axis=0) for t in columns]
    _rows(ctx, p, *columns)


def _select(ctx: LayerContext, p) -> list[str]:
    """Per image and class: top_k candidates, then NMS. Returns (scores, boxes, label, image, prior) columns."""
    loc, conf, priors = ctx.inputs[:3]
    num_priors = ctx.shape(2)[2] // 4
    boxes = decode_boxes(ctx, loc, priors, p.code_type, p.variance_encoded_in_target)  # N x P x 4
    c = int(p.num_classes)
    classes = [k for k in range(c) if k != p.background_label_id]
    nc = len(classes)
    scores = ctx.node("Reshape", [conf, _i64(ctx, "conf_shape", [0, -1, c])])
    scores = ctx.node("Transpose", [scores], perm=[0, 2, 1])  # N x C x P
    if nc != c:
        scores = ctx.node("Gather", [scores, _i64(ctx, "classes", classes)], axis=1)
    # Caffe keeps the top_k best candidates of each class before NMS: fold classes into the batch
    # so each (image, class) pair gets its own candidate boxes.
    k = num_priors if p.nms_param.top_k <= 0 else min(int(p.nms_param.top_k), num_priors)
    top_scores, top_idx = ctx.multi("TopK", [scores, _i64(ctx, "k", [k])], 2, axis=2)
    idx = ctx.node("Reshape", [top_idx, _i64(ctx, "idx_shape", [0, -1, 1])])
    cand = ctx.node("GatherND", [boxes, idx], batch_dims=1)  # N x C'K x 4
    cand = ctx.node("Reshape", [cand, _i64(ctx, "cand_shape", [-1, k, 4])])  # N*C' x K x 4
    cand_scores = ctx.node("Reshape", [top_scores, _i64(ctx, "score_shape", [-1, 1, k])])
    selected = ctx.node("NonMaxSuppression", [
        cand, cand_scores, _i64(ctx, "max_out", [k]), ctx.const("iou", [p.nms_param.nms_threshold]),
        ctx.const("score_th", [p.confidence_threshold])])
    sel_b = ctx.node("Gather", [selected, _i64(ctx, "col0", 0)], axis=1)  # image * C' + class
    sel_k = ctx.node("Gather", [selected, _i64(ctx, "col2", 2)], axis=1)  # candidate
    flat = ctx.node("Add", [ctx.node("Mul", [sel_b, _i64(ctx, "kk", k)]), sel_k])
    det_boxes = ctx.node("Gather", [ctx.node("Reshape", [cand, _i64(ctx, "flat4", [-1, 4])]), flat], axis=0)
    det_scores = ctx.node("Gather", [ctx.node("Reshape", [top_scores, _i64(ctx, "flat1", [-1])]), flat], axis=0)
    label = ctx.node("Gather", [_i64(ctx, "class_ids", classes), ctx.node("Mod", [sel_b, _i64(ctx, "nc", nc)])],
                     axis=0)
    image = ctx.node("Div", [sel_b, _i64(ctx, "nc_b", nc)])
    prior_id = ctx.node("Gather", [ctx.node("Reshape", [top_idx, _i64(ctx, "flat1b", [-1])]), flat], axis=0)
    return [det_scores, det_boxes, ctx.node("Cast", [label], to=1), ctx.node("Cast", [image], to=1), prior_id]


def _rows(ctx: LayerContext, p, scores: str, boxes: str, label: str, image: str, prior_id: str) -> None:
    """Sort the detections and write them as 1 x 1 x N x 7 rows."""
    # Order rows by image, then descending confidence (scores lie in [0, 1]), as OpenCV does.
    key = ctx.node("Sub", [ctx.node("Mul", [image, ctx.const("two", 2.0)]), scores])
    n = ctx.node("Shape", [key])
    # Equal confidences keep the prior order, as Caffe's stable sort does: TopK breaks ties by
    # position, so sort by prior index first, then by the key.
    _, by_prior = ctx.multi("TopK", [prior_id, n], 2, largest=0)
    _, order = ctx.multi("TopK", [ctx.node("Gather", [key, by_prior], axis=0), n], 2, largest=0)
    order = ctx.node("Gather", [by_prior, order], axis=0)
    cols = [ctx.node("Unsqueeze", [ctx.node("Gather", [t, order], axis=0), _i64(ctx, f"u{i}", [1])])
            for i, t in enumerate((image, label, scores))]
    rows = ctx.node("Concat", [*cols, ctx.node("Gather", [boxes, order], axis=0)], axis=1)
    if p.keep_top_k > 0:
        # OpenCV's convention: always keep_top_k rows, zero rows after the detections (static shape).
        missing = ctx.node("Sub", [_i64(ctx, "rows", [p.keep_top_k]), n])
        pads = ctx.node("Concat", [_i64(ctx, "pad0", [0, 0]), missing, _i64(ctx, "pad1", [0])], axis=0)
        rows = ctx.node("Pad", [rows, pads], mode="constant")
        rows = ctx.node("Reshape", [rows, _i64(ctx, "rows_shape", [p.keep_top_k, 7])])
    ctx.node("Unsqueeze", [rows, _i64(ctx, "axes01", [0, 1])], ctx.outputs[0])
