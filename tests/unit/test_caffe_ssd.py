"""SSD layers against OpenCV: PriorBox constants (several parameter sets) and DetectionOutput."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_nets import CaffeNet, assert_close, check_against_opencv, feeds_for, run_onnx

from int8kit.importers.caffe import convert

pytest.importorskip("cv2")

PRIOR_PARAMS = {
    # clip is spelled out: Caffe's default is false, OpenCV 4.x clips when the field is absent
    "min_max_flip": "min_size: 10 max_size: 20 aspect_ratio: 2 flip: true clip: false variance: 0.1 "
                    "variance: 0.1 variance: 0.2 variance: 0.2",
    "clip_step_offset": "min_size: 12 aspect_ratio: 3 aspect_ratio: 2 flip: false clip: true step: 8 "
                        "offset: 0.3 variance: 0.1",
    "two_min_sizes_img_size": "min_size: 6 min_size: 14 max_size: 12 max_size: 24 aspect_ratio: 1 "
                              "aspect_ratio: 2 step_h: 9 step_w: 11 clip: false variance: 0.2",
}


@pytest.mark.parametrize("case", sorted(PRIOR_PARAMS))
def test_prior_box_matches_opencv(case, tmp_path):
    net = CaffeNet(feat=(1, 4, 3, 5), data=(1, 3, 30, 50)).add(
        "PriorBox", "pb", ["feat", "data"], params=f"prior_box_param {{ {PRIOR_PARAMS[case]} }}")
    got = check_against_opencv(net, tmp_path, rtol=1e-6)
    assert got["pb"].shape[:2] == (1, 2)


def test_prior_box_img_size_follows_caffe(tmp_path):
    # img_size replaces the image blob's size for steps and normalisation (OpenCV 4.x ignores it).
    net = CaffeNet(feat=(1, 4, 3, 5), data=(1, 3, 30, 50)).add(
        "PriorBox", "pb", ["feat", "data"], params="prior_box_param { min_size: 6 img_size: 40 clip: false }")
    model, weights = net.write(tmp_path)
    pb = run_onnx(convert(model, weights), feeds_for(net))["pb"]
    step_w, step_h = 40 / 5, 40 / 3
    first = [(0.5 * step_w - 3) / 40, (0.5 * step_h - 3) / 40, (0.5 * step_w + 3) / 40, (0.5 * step_h + 3) / 40]
    assert_close(pb[0, 0, :4], np.array(first), rtol=1e-6)
    assert_close(pb[0, 1, :4], np.full(4, 0.1), rtol=1e-6)  # Caffe's default variance


def _ssd_head(code_type: str = "CENTER_SIZE", keep_top_k: int = 20, background: int = 0,
              classes: int = 2) -> CaffeNet:
    priors_per_cell, cells = 4, 3 * 3
    p = cells * priors_per_cell
    return (CaffeNet(feat=(1, 4, 3, 3), data=(1, 3, 30, 30), loc=(1, p * 4), logits=(1, p * classes))
            .add("PriorBox", "pb", ["feat", "data"],
                 params="prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 flip: true clip: false "
                        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }")
            .add("Reshape", "conf_r", "logits",
                 params=f"reshape_param {{ shape {{ dim: 0 dim: -1 dim: {classes} }} }}")
            .add("Softmax", "conf_sm", "conf_r", params="softmax_param { axis: 2 }")
            .add("Flatten", "conf", "conf_sm")
            .add("DetectionOutput", "det", ["loc", "conf", "pb"],
                 params=f"detection_output_param {{ num_classes: {classes} share_location: true "
                        f"background_label_id: {background} nms_param {{ nms_threshold: 0.45 top_k: 10 }} "
                        f"code_type: {code_type} keep_top_k: {keep_top_k} confidence_threshold: 0.05 }}"))


@pytest.mark.parametrize("code_type", ["CENTER_SIZE", "CORNER"])
def test_detection_output_matches_opencv(code_type, tmp_path):
    got = check_against_opencv(_ssd_head(code_type), tmp_path)
    rows = got["det"][0, 0]
    assert rows.shape == (20, 7) and (rows[:, 2] > 0.05).sum() >= 5  # real detections, zero padding after
    kept = rows[rows[:, 2] > 0]
    assert set(kept[:, 1].astype(int)) == {1}  # background never reported


def test_detection_output_multiclass_matches_opencv(tmp_path):
    got = check_against_opencv(_ssd_head(classes=3, background=1), tmp_path)
    labels = set(got["det"][0, 0][got["det"][0, 0, :, 2] > 0, 1].astype(int))
    assert labels == {0, 2}


def test_detection_output_keep_top_k_limits_rows(tmp_path):
    got = check_against_opencv(_ssd_head(keep_top_k=4, classes=4), tmp_path)
    assert got["det"].shape == (1, 1, 4, 7)


def test_detection_output_can_be_cut(tmp_path, caplog):
    net = _ssd_head()
    model, weights = net.write(tmp_path)
    onnx_model = convert(model, weights, detection_output="cut")
    assert [o.name for o in onnx_model.graph.output] == ["loc", "conf", "pb"]
    assert "DetectionOutput" in caplog.text and "cut" in caplog.text
    out = run_onnx(onnx_model, {k: v for k, v in feeds_for(net).items() if k in ("feat", "data", "loc", "logits")})
    assert_close(out["conf"].reshape(1, -1, 2).sum(-1), np.ones((1, 36)))
