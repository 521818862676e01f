"""Fitting the fused-score calibration (``core/calibration.py``) on a branch record.

The samples are the clusters of every frame under every branch and under random
selections (so that a branch's "found" and "ran but missed" evidence can be told apart;
with every branch running, one is always the complement of the other): the evidence of
each branch, and whether a true object of the cluster's class lies within the match
distance of its merged centre. One logistic regression per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dynfusion_ros.core.calibration import ScoreCalibration, evidence
from dynfusion_ros.core.fusion import MATCH_DISTANCE_M, fused_clusters
from dynfusion_ros.core.types import ObjectClass
from dynfusion_ros.eval.records import BranchRecord


def calibration_samples(
    record: BranchRecord, frames: Sequence[int], random_selections: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evidence rows, labels and classes of every cluster of every frame."""
    rows, labels, classes = [], [], []
    names = record.branch_names
    rng = np.random.default_rng(seed)
    for frame in frames:
        truth = record.frame_truth(frame)
        found = record.frame_detections(frame)
        selections = [names] + [
            tuple(n for n in names if rng.random() < 0.5) or names[:1]
            for _ in range(random_selections)
        ]
        for selection in selections:
            subset = {n: found[n] for n in selection}
            rows_, labels_, classes_ = _clusters(subset, truth, names)
            rows += rows_
            labels += labels_
            classes += classes_
    return np.array(rows), np.array(labels), np.array(classes)


def _clusters(subset, truth, names):
    rows, labels, classes = [], [], []
    for merged, best in fused_clusters(subset):
        same = [t for t in truth if t.object_class == merged.object_class]
        reach = MATCH_DISTANCE_M[merged.object_class]
        hit = any(np.hypot(t.box.x - merged.box.x, t.box.y - merged.box.y) < reach for t in same)
        rows.append(evidence(names, best, subset))
        labels.append(float(hit))
        classes.append(int(merged.object_class))
    return rows, labels, classes


def fit_calibration(
    record: BranchRecord, frames: Sequence[int], l2: float = 1e-3, steps: int = 300
) -> ScoreCalibration:
    rows, labels, classes = calibration_samples(record, frames)
    width = 3 * len(record.branch_names)
    bias = np.zeros(len(ObjectClass))
    weights = np.zeros((len(ObjectClass), width))
    for object_class in ObjectClass:
        mine = classes == int(object_class)
        if not mine.any():
            continue
        x = torch.tensor(rows[mine], dtype=torch.float64)
        y = torch.tensor(labels[mine], dtype=torch.float64)
        w = torch.zeros(width, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def loss(x=x, y=y, w=w, b=b, optimiser=optimiser):
            optimiser.zero_grad()
            value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
            value = value + l2 * (w * w).sum()
            value.backward()
            return value

        optimiser.step(loss)
        bias[int(object_class)] = float(b.detach()[0])
        weights[int(object_class)] = w.detach().numpy()
    return ScoreCalibration(record.branch_names, bias, weights)
