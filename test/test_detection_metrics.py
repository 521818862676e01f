"""BEV AP against cases small enough to work out by hand."""

from __future__ import annotations

import math

import pytest

from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
from dynfusion_ros.eval.detection_metrics import (
    ScoredFrame,
    average_precision,
    evaluate_detections,
    evaluate_per_context,
)

CAR, PED = ObjectClass.CAR, ObjectClass.PEDESTRIAN


def det(x: float, y: float, score: float = 1.0, cls: ObjectClass = CAR) -> Detection:
    return Detection(cls, score, Box3D(x, y, 0.8, 4.5, 1.9, 1.6, 0.0))


def test_perfect_predictions_score_one_at_every_threshold():
    truth = [det(10, 0), det(20, 5)]
    frames = [ScoredFrame([det(10, 0, 0.9), det(20, 5, 0.8)], truth)]
    metrics = evaluate_detections(frames)
    assert metrics.ap["car"] == {0.5: 1.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert metrics.map == 1.0
    assert math.isnan(metrics.ap_per_class["pedestrian"])  # no pedestrian truth: left out


def test_shift_counts_only_at_thresholds_beyond_it():
    frames = [ScoredFrame([det(10.7, 0, 0.9)], [det(10, 0)])]  # 0.7 m off
    metrics = evaluate_detections(frames)
    assert metrics.ap["car"] == {0.5: 0.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert metrics.map == pytest.approx(0.75)


def test_missed_object_halves_recall():
    frames = [ScoredFrame([det(10, 0, 0.9)], [det(10, 0), det(30, 0)])]
    assert average_precision(frames, CAR, 1.0) == pytest.approx(0.5)


def test_duplicate_below_the_match_costs_nothing_above_it_costs_half():
    truth = [det(10, 0)]
    below = [ScoredFrame([det(10, 0, 0.9), det(10.1, 0, 0.5)], truth)]
    assert average_precision(below, CAR, 1.0) == pytest.approx(1.0)
    # a false positive ranked first: precision is 1/2 when recall reaches 1
    above = [ScoredFrame([det(40, 0, 0.95), det(10, 0, 0.5)], truth)]
    assert average_precision(above, CAR, 1.0) == pytest.approx(0.5)


def test_wrong_class_is_no_match():
    frames = [ScoredFrame([det(10, 0, 0.9, PED)], [det(10, 0)])]
    metrics = evaluate_detections(frames)
    assert metrics.ap_per_class["car"] == 0.0
    assert math.isnan(metrics.ap_per_class["pedestrian"])


def test_matches_stay_within_their_frame():
    frames = [ScoredFrame([det(10, 0, 0.9)], []), ScoredFrame([], [det(10, 0)])]
    assert average_precision(frames, CAR, 4.0) == 0.0


def test_interpolation_uses_best_precision_at_higher_recall():
    # ranks: TP, FP, TP over 2 truths -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    truth = [det(10, 0), det(20, 0)]
    frames = [ScoredFrame([det(10, 0, 0.9), det(40, 0, 0.8), det(20, 0, 0.7)], truth)]
    assert average_precision(frames, CAR, 1.0) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_boxes_off_the_grid_are_ignored():
    frames = [ScoredFrame([det(80, 0, 0.9)], [det(80, 0), det(10, 0)])]  # x = 80 m: off grid
    assert evaluate_detections(frames).map == 0.0
    assert evaluate_detections(frames).truth_count["car"] == 1


def test_per_context_breakdown():
    frames = [
        ScoredFrame([det(10, 0, 0.9)], [det(10, 0)], "clear"),
        ScoredFrame([], [det(10, 0)], "fog"),
    ]
    results = evaluate_per_context(frames)
    assert results["clear"].map == 1.0
    assert results["fog"].map == 0.0
    assert results["all"].map == pytest.approx(0.5)
    assert results["all"].frames == 2
