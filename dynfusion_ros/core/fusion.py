"""Late fusion of several detectors' outputs in BEV: the ``late`` policy, HydraFusion's
baseline, runs each stem alone and merges their detections here.

Weighted box fusion (WBF) clusters the sources' boxes of one class by centre distance and
averages each cluster, weighting every box by its score times its source's weight; the
cluster's score is the weighted share of sources that found the object, so an object
seen by every trusted source scores higher than one only a single source saw.
Non-maximum suppression (NMS) keeps the best box of each cluster as it is.
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


def _check_weights(per_source: Mapping[str, list[Detection]], weights: Mapping[str, float]) -> None:
    for name in per_source:
        weight = weights.get(name, 1.0)
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"source weight for {name!r} must be a positive number, got {weight}")


class _Pool:
    """Every source's detections in one list, strongest (score x source weight) first,
    grouped greedily: each joins the first stronger leader of its class near enough,
    or leads a new cluster. Distances are computed once, as a matrix, because this
    runs for every candidate selection of every frame when the gate is trained."""

    def __init__(self, per_source: Mapping[str, list[Detection]], weights: Mapping[str, float]):
        _check_weights(per_source, weights)
        pooled = [
            (detection, name, weights.get(name, 1.0))
            for name, detections in per_source.items()
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
    per_source: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[Detection]:
    """The highest-scoring box of every cluster, unchanged."""
    pool = _Pool(per_source, weights or {})
    return [pool.items[cluster[0]][0] for cluster in pool.clusters]


def weighted_box_fusion(
    per_source: Mapping[str, list[Detection]], weights: Mapping[str, float] | None = None
) -> list[Detection]:
    """One averaged box per cluster; see the module docstring for the score."""
    weights = weights or {}
    pool = _Pool(per_source, weights)
    total_weight = sum(weights.get(name, 1.0) for name in per_source) or 1.0
    return [_merge([pool.items[i] for i in cluster], total_weight) for cluster in pool.clusters]


def _merge(cluster: list[tuple[Detection, str, float]], total_weight: float) -> Detection:
    leader = cluster[0][0]
    if len(cluster) == 1:
        score = min(1.0, leader.score * cluster[0][2] / total_weight)
        return Detection(leader.object_class, score, leader.box, leader.velocity)
    mass = np.array([d.score * w for d, _, w in cluster])
    boxes = np.array([d.box.as_array() for d, _, _ in cluster])
    mean = (boxes[:, :6] * mass[:, None]).sum(axis=0) / mass.sum()
    best_per_source: dict[str, float] = {}
    for detection, name, weight in cluster:
        best_per_source[name] = max(best_per_source.get(name, 0.0), detection.score * weight)
    score = min(1.0, sum(best_per_source.values()) / total_weight)
    velocities = [(d.velocity, d.score * w) for d, _, w in cluster if d.velocity is not None]
    velocity = None
    if velocities:
        vectors, masses = np.array([v for v, _ in velocities]), np.array([m for _, m in velocities])
        vx, vy = (vectors * masses[:, None]).sum(axis=0) / masses.sum()
        velocity = (float(vx), float(vy))
    return Detection(leader.object_class, score, Box3D(*mean, leader.box.yaw), velocity)


def fuse(
    per_source: Mapping[str, list[Detection]],
    method: str = "wbf",
    weights: Mapping[str, float] | None = None,
) -> list[Detection]:
    """Fuse per-source detections with ``method`` (``wbf`` or ``nms``)."""
    if method == "wbf":
        return weighted_box_fusion(per_source, weights)
    if method == "nms":
        return non_maximum_suppression(per_source, weights)
    raise ValueError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
