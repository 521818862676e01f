"""Late fusion of several sources' detections (the late policy): WBF and the NMS baseline."""

from __future__ import annotations

import pytest

from dynfusion_ros.core.fusion import fuse, non_maximum_suppression, weighted_box_fusion
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass

CAR, PED = ObjectClass.CAR, ObjectClass.PEDESTRIAN


def det(x: float, y: float, score: float, cls: ObjectClass = CAR, length: float = 4.0):
    return Detection(cls, score, Box3D(x, y, 0.8, length, 1.9, 1.6, 0.1))


def test_wbf_averages_a_cluster_weighted_by_score_and_branch_weight():
    per_branch = {
        "lidar": [det(10.0, 0.0, 0.8, length=4.0)],
        "radar": [det(11.0, 0.0, 0.4, length=5.0)],
    }
    fused = weighted_box_fusion(per_branch, {"lidar": 1.0, "radar": 0.5})
    assert len(fused) == 1
    (box,) = fused
    # masses 0.8 and 0.2
    assert box.box.x == pytest.approx(10.2)
    assert box.box.length == pytest.approx(4.2)
    assert box.box.yaw == pytest.approx(0.1)
    assert box.score == pytest.approx((0.8 + 0.2) / 1.5)


def test_wbf_object_seen_by_one_branch_of_two_loses_half_its_score():
    fused = weighted_box_fusion({"camera": [det(10, 0, 0.9)], "lidar": []})
    assert [d.score for d in fused] == [pytest.approx(0.45)]


def test_classes_and_distant_boxes_stay_apart():
    per_branch = {"a": [det(10, 0, 0.9), det(10, 0, 0.8, PED)], "b": [det(14, 0, 0.7)]}
    assert len(weighted_box_fusion(per_branch)) == 3
    assert len(non_maximum_suppression(per_branch)) == 3


def test_nms_keeps_the_best_box_unchanged():
    best = det(10.5, 0, 0.9)
    kept = non_maximum_suppression({"a": [det(10, 0, 0.6)], "b": [best]})
    assert kept == [best]


def test_single_branch_passes_through():
    detections = [det(10, 0, 0.9), det(30, 5, 0.3)]
    assert [d.score for d in weighted_box_fusion({"lidar": detections})] == [0.9, 0.3]


def test_bad_method_and_weight_are_rejected():
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse({}, "mean")
    with pytest.raises(ValueError, match="positive"):
        weighted_box_fusion({"a": [det(1, 0, 0.5)]}, {"a": 0.0})
