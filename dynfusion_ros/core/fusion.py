"""Late fusion of the detections of several branches, in BEV.

Weighted box fusion (WBF) clusters the branches' boxes of one class by centre distance and
averages each cluster, weighting every box by its score times its branch's weight; the
cluster's score is the weighted share of branches that found the object, so an object
seen by every trusted branch scores higher than one only a single branch saw. Non-maximum
suppression (NMS), the baseline, keeps the best box of each cluster as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dynfusion_ros.core.types import Box3D, Detection, ObjectClass

MATCH_DISTANCE_M: Mapping[ObjectClass, float] = {
    ObjectClass.CAR: 2.0,
    ObjectClass.PEDESTRIAN: 0.8,
    ObjectClass.CYCLIST: 1.2,
}
"""Centres closer than this (m) are one object; about half the object's length."""

METHODS = ("wbf", "nms")


def _pooled(per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float]):
    pooled = [
        (detection, name, weights.get(name, 1.0))
        for name, detections in per_branch.items()
        for detection in detections
    ]
    pooled.sort(key=lambda item: -item[0].score * item[2])
    return pooled


def _check_weights(per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float]) -> None:
    for name in per_branch:
        weight = weights.get(name, 1.0)
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"branch weight for {name!r} must be a positive number, got {weight}")


def _near(a: Detection, b: Detection) -> bool:
    distance = np.hypot(a.box.x - b.box.x, a.box.y - b.box.y)
    return a.object_class == b.object_class and distance < MATCH_DISTANCE_M[a.object_class]


def non_maximum_suppression(
    per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[Detection]:
    """The highest-scoring box of every cluster, unchanged."""
    weights = weights or {}
    _check_weights(per_branch, weights)
    kept: list[Detection] = []
    for detection, _, _ in _pooled(per_branch, weights):
        if not any(_near(detection, other) for other in kept):
            kept.append(detection)
    return kept


def weighted_box_fusion(
    per_branch: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[Detection]:
    """One averaged box per cluster; see the module docstring for the score."""
    weights = weights or {}
    _check_weights(per_branch, weights)
    total_weight = sum(weights.get(name, 1.0) for name in per_branch) or 1.0
    clusters: list[list[tuple[Detection, str, float]]] = []
    for item in _pooled(per_branch, weights):
        home = next((c for c in clusters if _near(item[0], c[0][0])), None)
        if home is None:
            clusters.append([item])
        else:
            home.append(item)
    return [_merge(cluster, total_weight) for cluster in clusters]


def _merge(cluster: list[tuple[Detection, str, float]], total_weight: float) -> Detection:
    leader = cluster[0][0]
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
) -> list[Detection]:
    """Fuse per-branch detections with ``method`` (``wbf`` or ``nms``)."""
    if method == "wbf":
        return weighted_box_fusion(per_branch, weights)
    if method == "nms":
        return non_maximum_suppression(per_branch, weights)
    raise ValueError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
