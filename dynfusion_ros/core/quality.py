"""How good one frame's detections are against its ground truth: the number the gate
learns to predict for every configuration of the detector, and the oracle maximises.

A frame's quality is its own average precision, over the classes it has ground truth for
and the centre-distance thresholds of the dataset metric, so that choosing the best
configuration frame by frame pushes the dataset mAP up. A frame with no object on the grid
scores one minus its most confident false alarm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import Detection

THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)


def _arrays(detections: Sequence[Detection], grid: BevGrid) -> tuple[np.ndarray, ...]:
    if not detections:
        return np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros(0)
    xy = np.array([[d.box.x, d.box.y] for d in detections])
    classes = np.array([int(d.object_class) for d in detections])
    scores = np.array([d.score for d in detections])
    inside = grid.contains(xy)
    return xy[inside], classes[inside], scores[inside]


def _class_ap(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """AP of score-sorted predictions (N, 2) against truth (M, 2), greedy matching."""
    if not len(predicted):
        return 0.0
    distance = np.hypot(*(predicted[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    free = np.ones(len(truth), dtype=bool)
    hits = np.zeros(len(predicted), dtype=bool)
    for rank in range(len(predicted)):
        row = np.where(free, distance[rank], np.inf)
        nearest = int(np.argmin(row))
        if row[nearest] < threshold:
            free[nearest] = False
            hits[rank] = True
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(predicted) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], true_positives / len(truth)]))
    return float(np.sum(steps * envelope))


def frame_quality(
    predictions: Sequence[Detection], truth: Sequence[Detection], grid: BevGrid | None = None
) -> float:
    """Per-frame AP in [0, 1]; see the module docstring."""
    grid = grid or BevGrid()
    xy, classes, scores = _arrays(predictions, grid)
    truth_xy, truth_classes, _ = _arrays(truth, grid)
    if not len(truth_xy):
        return 1.0 - float(scores.max()) if len(scores) else 1.0
    values = []
    for object_class in np.unique(truth_classes):
        mine = classes == object_class
        order = np.argsort(-scores[mine], kind="stable")
        predicted = xy[mine][order]
        target = truth_xy[truth_classes == object_class]
        values.extend(_class_ap(predicted, target, t) for t in THRESHOLDS_M)
    return float(np.mean(values))
