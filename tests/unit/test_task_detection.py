"""VOC mAP@0.5: a hand-checked case, SSD DetectionOutput rows, resampling, scale mismatch."""

from __future__ import annotations

import numpy as np
import pytest

from int8kit.errors import DataError
from int8kit.evaluate.detection import MeanAP, average_precision, match

# Two images, one class: image 0 holds box A, image 1 box B.
TRUTH = [[(1, 0.1, 0.1, 0.4, 0.4)], [(1, 0.5, 0.5, 0.9, 0.9)]]
# (cls, conf, box): A found at 0.9, a false box at 0.8, B found at 0.7.
DETS = [np.array([[1, 0.9, 0.1, 0.1, 0.4, 0.41], [1, 0.8, 0.6, 0.0, 0.9, 0.2]]), np.array([[1, 0.7, 0.52, 0.5, 0.9, 0.9]])]
# Ranked: TP (P 1, R .5), FP (P .5, R .5), TP (P 2/3, R 1): AP = .5 * 1 + .5 * 2/3.
HAND_AP = 0.5 + 0.5 * 2 / 3


def _map(dets, truth=TRUTH) -> MeanAP:
    m = MeanAP(postprocess=lambda outputs: dets)
    m.update({"out": np.zeros(1)}, truth)
    return m


def test_hand_checked_average_precision() -> None:
    assert _map(DETS).score() == pytest.approx(HAND_AP)


def test_ssd_detection_output_rows_score_the_same() -> None:
    rows = [[0, *DETS[0][0]], [0, *DETS[0][1]], [1, *DETS[1][0]], [-1, 0, 0, 0, 0, 0, 0]]  # -1: padding row
    m = MeanAP("detection_out")
    m.update({"detection_out": np.array(rows, np.float32).reshape(1, 1, 4, 7)}, TRUTH)
    assert m.score() == pytest.approx(HAND_AP)


def test_each_box_matches_once_and_classes_are_averaged() -> None:
    double = [np.array([[1, 0.9, 0.1, 0.1, 0.4, 0.4], [1, 0.8, 0.1, 0.1, 0.4, 0.4]]), np.zeros((0, 6))]
    tp = match(double[0], np.array([[1, 0.1, 0.1, 0.4, 0.4]]))
    assert tp.tolist() == [True, False]  # the duplicate is a false positive
    assert _map(double).score() == pytest.approx(0.5)  # recall 0.5 at precision 1
    # a second class found perfectly: mean of 0.5 and 1
    truth = [TRUTH[0] + [(2, 0.6, 0.6, 0.8, 0.8)], TRUTH[1]]
    dets = [np.vstack([double[0], [2, 0.5, 0.6, 0.6, 0.8, 0.8]]), double[1]]
    assert _map(dets, truth).score() == pytest.approx(0.75)


def test_score_of_resamples_images() -> None:
    m = _map(DETS)
    assert m.score_of(np.array([0, 1])) == pytest.approx(m.score())
    twice = MeanAP(postprocess=lambda outputs: [DETS[0], DETS[0], DETS[1]])
    twice.update({}, [TRUTH[0], TRUTH[0], TRUTH[1]])
    assert m.score_of(np.array([0, 0, 1])) == pytest.approx(twice.score())
    assert m.score_of(np.array([1, 1])) == pytest.approx(1.0)  # image 1 alone: one box, found first


def test_weighted_ap_equals_repeated_detections() -> None:
    conf, tp = np.array([0.9, 0.8, 0.7]), np.array([True, False, True])
    weighted = average_precision(conf, tp, np.array([2.0, 1.0, 1.0]), positives=3)
    repeated = average_precision(np.array([0.9, 0.9, 0.8, 0.7]), np.array([True, True, False, True]), np.ones(4), positives=3)
    assert weighted == pytest.approx(repeated)


def test_pixel_labels_against_normalised_boxes_is_one_clear_error() -> None:
    pixels = [[(1, 10, 10, 40, 40)], [(1, 50, 50, 90, 90)]]
    with pytest.raises(DataError, match="normalised .* in pixels") as err:
        _map(DETS, pixels).score()
    assert "\n" not in str(err.value)


def test_bad_postprocess_result_and_raw_outputs() -> None:
    with pytest.raises(DataError, match="gave 1 entries for a batch of 2 images"):
        _map([DETS[0]])
    with pytest.raises(DataError, match=r"expected SSD DetectionOutput rows"):
        MeanAP().update({"logits": np.zeros((2, 10))}, TRUTH)
    with pytest.raises(DataError, match="no ground-truth boxes"):
        _map(DETS, [[], []]).score()
