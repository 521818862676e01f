"""Late fusion of the detections of several branches, in BEV.

Weighted box fusion (WBF) clusters the branches' boxes of one class by centre distance and
averages each cluster, weighting every box by its score times its branch's weight; the
cluster's score is the weighted share of branches that found the object, so an object
seen by every trusted branch scores higher than one only a single branch saw. With a
``ScoreCalibration`` the cluster's score is instead its calibrated probability, which
stays comparable across frames whose selections differ. Non-maximum suppression (NMS),
the baseline, keeps the best box of each cluster as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dynfusion_ros.core.calibration import ScoreCalibration
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass

MATCH_DISTANCE_M: Mapping[ObjectClass, float] = {
    ObjectClass.CAR: 2.0,
    ObjectClass.PEDESTRIAN: 0.8,
    ObjectClass.CYCLIST: 1.2,
}
"""Centres closer than this (m) are one object; about half the object's length."""

METHODS = ("wbf", "nms")


def _check_weights(per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float]) -> None:
    for name in per_branch:
        weight = weights.get(name, 1.0)
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"branch weight for {name!r} must be a positive number, got {weight}")


class _Pool:
    """Every branch's detections in one list, strongest (score x branch weight) first,
    grouped greedily: each joins the first stronger leader of its class near enough,
    or leads a new cluster. Distances are computed once, as a matrix, because this
    runs for every candidate selection of every frame when the gate is trained."""

    def __init__(self, per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float]):
        _check_weights(per_branch, weights)
        pooled = [
            (detection, name, weights.get(name, 1.0))
            for name, detections in per_branch.items()
            for detection in detections
        ]
        pooled.sort(key=lambda item: -item[0].score * item[2])
        self.items = pooled
        self.clusters: list[list[int]] = []
        if not pooled:
            return
        xy = np.array([[d.box.x, d.box.y] for d, _, _ in pooled])
        classes = np.array([int(d.object_class) for d, _, _ in pooled])
        limit = np.array([MATCH_DISTANCE_M[ObjectClass(c)] for c in classes])
        distance = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        near = (classes[:, None] == classes[None, :]) & (distance < limit[:, None])
        # the stronger detections near each one, in order; then the greedy pass is on
        # Python ints (one numpy call per detection was most of a frame's fusion time)
        stronger: list[list[int]] = [[] for _ in pooled]
        for index, other in zip(*np.nonzero(np.tril(near, -1)), strict=True):
            stronger[index].append(int(other))
        cluster_of: dict[int, int] = {}  # leader -> its cluster
        for index, candidates in enumerate(stronger):
            leader = next((other for other in candidates if other in cluster_of), None)
            if leader is None:
                cluster_of[index] = len(self.clusters)
                self.clusters.append([index])
            else:
                self.clusters[cluster_of[leader]].append(index)


def non_maximum_suppression(
    per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[Detection]:
    """The highest-scoring box of every cluster, unchanged."""
    pool = _Pool(per_branch, weights or {})
    return [pool.items[cluster[0]][0] for cluster in pool.clusters]


def fused_clusters(
    per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[tuple[Detection, dict[str, float]]]:
    """WBF's merged box of every cluster, with each member branch's best raw score."""
    weights = weights or {}
    pool = _Pool(per_branch, weights)
    total_weight = sum(weights.get(name, 1.0) for name in per_branch) or 1.0
    clusters = []
    for cluster in pool.clusters:
        members = [pool.items[i] for i in cluster]
        best: dict[str, float] = {}
        for found, name, _ in members:
            best[name] = max(best.get(name, 0.0), found.score)
        clusters.append((_merge(members, total_weight), best))
    return clusters


def weighted_box_fusion(
    per_branch: Mapping[str, list[Detection]],
    weights: Mapping[str, float] | None = None,
    calibration: ScoreCalibration | None = None,
) -> list[Detection]:
    """One averaged box per cluster; see the module docstring for the score."""
    clusters = fused_clusters(per_branch, weights)
    if calibration is None:
        return [merged for merged, _ in clusters]
    merged = [box for box, _ in clusters]
    scores = calibration.probabilities(
        [m.object_class for m in merged], [best for _, best in clusters], per_branch
    )
    return [
        Detection(m.object_class, score, m.box, m.velocity)
        for m, score in zip(merged, scores, strict=True)
    ]


def _merge(cluster: list[tuple[Detection, str, float]], total_weight: float) -> Detection:
    leader = cluster[0][0]
    if len(cluster) == 1:
        score = min(1.0, leader.score * cluster[0][2] / total_weight)
        return Detection(leader.object_class, score, leader.box, leader.velocity)
    mass = np.array([d.score * w for d, _, w in cluster])
    boxes = np.array([d.box.as_array() for d, _, _ in cluster])
    mean = (boxes[:, :6] * mass[:, None]).sum(axis=0) / mass.sum()
    best_per_branch: dict[str, float] = {}
    for detection, name, weight in cluster:
        best_per_branch[name] = max(best_per_branch.get(name, 0.0), detection.score * weight)
    score = min(1.0, sum(best_per_branch.values()) / total_weight)
    velocities = [(d.velocity, d.score * w) for d, _, w in cluster if d.velocity is not None]
    velocity = None
    if velocities:
        vectors, masses = np.array([v for v, _ in velocities]), np.array([m for _, m in velocities])
        vx, vy = (vectors * masses[:, None]).sum(axis=0) / masses.sum()
        velocity = (float(vx), float(vy))
    return Detection(leader.object_class, score, Box3D(*mean, leader.box.yaw), velocity)


def fuse(
    per_branch: Mapping[str, list[Detection]],
    method: str = "wbf",
    weights: Mapping[str, float] | None = None,
    calibration: ScoreCalibration | None = None,
) -> list[Detection]:
    """Fuse per-branch detections with ``method`` (``wbf`` or ``nms``); ``calibration``
    rescores WBF clusters (see ``core/calibration.py``)."""
    if method == "wbf":
        return weighted_box_fusion(per_branch, weights, calibration)
    if method == "nms":
        return non_maximum_suppression(per_branch, weights)
    raise ValueError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
