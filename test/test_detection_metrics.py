"""nuScenes detection metrics against cases small enough to work out by hand.

nuScenes AP samples precision at recall 0, 0.01, ..., 1 and averages
max(0, precision - 0.1) / 0.9 over the 90 samples above 10 % recall; past the highest
recall reached, precision is 0, and at a recall reached several times the devkit's
``np.interp`` reads the last precision there. So a curve at precision 1 up to recall r
scores (100 r - 10) / 90. Sums of 0.9s divided by 0.9 come to 1 + 4e-16, as in the devkit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
from dynfusion_ros.eval.detection_metrics import (
    ScoredFrame,
    classes_left_out,
    evaluate_detections,
    evaluate_per_context,
)

CAR, PED = ObjectClass.CAR, ObjectClass.PEDESTRIAN


def det(
    x: float,
    y: float,
    score: float = 1.0,
    cls: ObjectClass = CAR,
    length: float = 4.5,
    yaw: float = 0.0,
) -> Detection:
    return Detection(cls, score, Box3D(x, y, 0.8, length, 1.9, 1.6, yaw))


def car_ap(frames: list[ScoredFrame], threshold: float = 1.0) -> float:
    return evaluate_detections(frames).ap["car"][threshold]


def test_perfect_predictions_score_one_and_no_error():
    truth = [det(10, 0), det(20, 5)]
    metrics = evaluate_detections([ScoredFrame([det(10, 0, 0.9), det(20, 5, 0.8)], truth)])
    assert metrics.ap["car"] == pytest.approx({0.5: 1.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert metrics.map == pytest.approx(1.0) and metrics.map_all_points == 1.0
    assert metrics.mean_tp_errors == {"mate_m": 0.0, "mase": 0.0, "maoe_rad": 0.0}
    assert metrics.nds3 == pytest.approx(1.0)
    assert math.isnan(metrics.ap_per_class["pedestrian"])  # no pedestrian truth: left out
    assert metrics.classes_without_truth == ["pedestrian", "cyclist"]


def test_shift_counts_only_at_thresholds_beyond_it_and_is_the_translation_error():
    metrics = evaluate_detections([ScoredFrame([det(10.7, 0, 0.9)], [det(10, 0)])])
    assert metrics.ap["car"] == pytest.approx({0.5: 0.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert metrics.map == pytest.approx(0.75)
    assert metrics.tp_errors["car"]["mate_m"] == pytest.approx(0.7)


def test_distance_equal_to_the_threshold_is_no_match():
    assert car_ap([ScoredFrame([det(10.5, 0, 0.9)], [det(10, 0)])], 0.5) == 0.0


def test_half_recall_scores_the_samples_up_to_it():
    frames = [ScoredFrame([det(10, 0, 0.9)], [det(10, 0), det(30, 0)])]
    assert car_ap(frames) == pytest.approx(40 / 90)  # samples 0.11 ... 0.50
    assert evaluate_detections(frames).map_all_points == pytest.approx(0.5)


def test_recall_below_ten_percent_is_clipped_away():
    truth = [det(5 + 2 * i, 0) for i in range(20)]
    frames = [ScoredFrame([det(5, 0, 0.9)], truth)]  # recall 0.05 at precision 1
    assert car_ap(frames) == 0.0
    assert evaluate_detections(frames).map_all_points == pytest.approx(0.05)


def test_precision_below_ten_percent_is_clipped_away():
    false = [det(40, -20 + 4 * i, 0.9) for i in range(10)]
    frames = [ScoredFrame([*false, det(10, 0, 0.5)], [det(10, 0)])]  # precision 1/11
    assert car_ap(frames) == 0.0
    assert evaluate_detections(frames).map_all_points == pytest.approx(1 / 11)


def test_precision_is_sampled_as_the_devkit_does_not_made_monotone():
    # ranks TP, FP, TP over 2 truths: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # The devkit interpolates the raw curve linearly between recall 1/2 (where the
    # repeated recall reads its last precision, 1/2) and 1 (2/3).
    truth = [det(10, 0), det(20, 0)]
    frames = [ScoredFrame([det(10, 0, 0.9), det(40, 0, 0.8), det(20, 0, 0.7)], truth)]
    below_half = 39 * (1.0 - 0.1)  # recall 0.11 ... 0.49 at precision 1
    upper = [0.5 + (2 / 3 - 0.5) * (r - 50) / 50 - 0.1 for r in range(50, 101)]
    assert car_ap(frames) == pytest.approx((below_half + sum(upper)) / 90 / 0.9)
    # the old rule: monotone envelope over every recall step
    assert evaluate_detections(frames).map_all_points == pytest.approx(0.5 + 0.5 * 2 / 3)


# a hit then a miss at recall 1: precision 1 up to recall 0.99, then the last precision, 1/2
HIT_THEN_MISS = (89 * 0.9 + 0.4) / 90 / 0.9
# a miss then a hit: precision 0 at recall 0 rising to 1/2 at 1, above 0.1 from recall 0.2
MISS_THEN_HIT = sum(0.005 * r - 0.1 for r in range(21, 101)) / 90 / 0.9


def test_equal_scores_rank_the_later_box_first():
    miss, hit = ScoredFrame([det(30, 0, 0.5)], []), ScoredFrame([det(10, 0, 0.5)], [det(10, 0)])
    assert car_ap([miss, hit]) == pytest.approx(HIT_THEN_MISS)  # the hit, later, first
    assert car_ap([hit, miss]) == pytest.approx(MISS_THEN_HIT) == pytest.approx(0.2)


def test_false_positive_costs_precision_from_its_rank_on():
    truth = [det(10, 0)]
    duplicate = [ScoredFrame([det(10, 0, 0.9), det(10.1, 0, 0.5)], truth)]
    assert car_ap(duplicate) == pytest.approx(HIT_THEN_MISS)
    above = [ScoredFrame([det(40, 0, 0.95), det(10, 0, 0.5)], truth)]
    assert car_ap(above) == pytest.approx(MISS_THEN_HIT)


def test_scale_and_orientation_errors():
    truth = [det(10, 0), det(20, 0, yaw=3.1)]
    found = [det(10, 0, 0.9, length=4.0, yaw=0.3), det(20, 0, 0.8, yaw=-3.1)]
    errors = evaluate_detections([ScoredFrame(found, truth)]).tp_errors["car"]

    def sampled(first: float, mean_of_both: float) -> float:
        # the running mean at the sampled scores: the first match's error up to recall
        # 1/2 (40 samples above 0.1), then linear in recall (score) to the mean of both
        return (90 * first + 25.5 * (mean_of_both - first)) / 90

    assert errors["mase"] == pytest.approx(sampled(1 / 9, 1 / 18))  # IoU 4 / 4.5, then 1
    wrapped = 2 * math.pi - 6.2  # 3.1 against -3.1
    assert errors["maoe_rad"] == pytest.approx(sampled(0.3, (0.3 + wrapped) / 2))
    assert errors["mate_m"] == 0.0


def test_no_match_at_two_metres_is_error_one_and_ap_zero():
    metrics = evaluate_detections([ScoredFrame([det(30, 0, 0.9)], [det(10, 0)])])
    assert metrics.ap_per_class["car"] == 0.0
    assert metrics.tp_errors["car"] == {"mate_m": 1.0, "mase": 1.0, "maoe_rad": 1.0}
    assert metrics.nds3 == 0.0


def test_nds3_weighs_map_five_times_each_tp_score():
    metrics = evaluate_detections([ScoredFrame([det(10.7, 0, 0.9)], [det(10, 0)])])
    assert metrics.nds3 == pytest.approx((5 * 0.75 + (1 - 0.7) + 1 + 1) / 8)


def test_wrong_class_is_no_match():
    metrics = evaluate_detections([ScoredFrame([det(10, 0, 0.9, PED)], [det(10, 0)])])
    assert metrics.ap_per_class["car"] == 0.0
    assert math.isnan(metrics.ap_per_class["pedestrian"])


def test_matches_stay_within_their_frame():
    frames = [ScoredFrame([det(10, 0, 0.9)], []), ScoredFrame([], [det(10, 0)])]
    assert car_ap(frames, 4.0) == 0.0


def test_boxes_off_the_grid_or_beyond_their_class_range_are_ignored():
    # x = 80 m: off the grid; a car at 50.5 m and a pedestrian at 45 m: on the grid but
    # beyond nuScenes' 50 m and 40 m. The old rule counted the last two.
    truth = [det(80, 0), det(10, 0), det(50.5, 0), det(45, 0, cls=PED)]
    found = [det(80, 0, 0.9), det(50.5, 0, 0.9), det(45, 0, 0.9, cls=PED)]
    metrics = evaluate_detections([ScoredFrame(found, truth)])
    assert metrics.truth_count == {"car": 1, "pedestrian": 0, "cyclist": 0}
    assert metrics.map == 0.0  # only the car at 10 m counts, and it was missed
    assert metrics.map_all_points == pytest.approx((0.5 + 1.0) / 2)


def test_per_context_breakdown_names_the_classes_it_leaves_out():
    frames = [
        ScoredFrame([det(10, 0, 0.9), det(5, 2, 0.8, cls=PED)], [det(10, 0), det(5, 2, cls=PED)]),
        ScoredFrame([], [det(10, 0)], "fog"),
    ]
    results = evaluate_per_context(frames)
    assert results["unlabelled"].map == pytest.approx(1.0)
    assert results["fog"].map == 0.0  # its car missed; its pedestrian column left out
    assert results["fog"].classes_without_truth == ["pedestrian", "cyclist"]
    assert results["all"].ap_per_class["car"] == pytest.approx(40 / 90)
    assert results["all"].frames == 2 and results["fog"].frames == 1
    note = classes_left_out({c: m.classes_without_truth for c, m in results.items()})
    assert "fog: no pedestrian, cyclist" in note


def test_subsets_score_as_if_evaluated_alone():
    frames = [
        ScoredFrame([det(10, 0, 0.9), det(30, 3, 0.7)], [det(10, 0)], "clear"),
        ScoredFrame([det(12, 1, 0.8)], [det(12, 1.3), det(25, 0)], "fog"),
    ]
    per_context = evaluate_per_context(frames)
    for context in ("clear", "fog"):
        alone = evaluate_detections([f for f in frames if f.context == context])
        np.testing.assert_equal(per_context[context].ap, alone.ap)
        np.testing.assert_equal(per_context[context].tp_errors, alone.tp_errors)
        assert per_context[context].map_all_points == alone.map_all_points
