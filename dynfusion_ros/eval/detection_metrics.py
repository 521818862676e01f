"""BEV detection average precision with centre-distance matching, as nuScenes scores it.

For each class and distance threshold, predictions from all frames are ranked by score;
each one, in turn, takes the nearest still-unmatched ground-truth box of its class in its
frame whose BEV centre lies within the threshold (a true positive) or is a false
positive. AP is the area under the precision-recall curve with precision made monotone
(the all-points interpolation), over recall 0..1 without nuScenes' 10 % clipping, so that
small hand-worked cases have exact answers. mAP is the mean over classes that have
ground truth and over the thresholds. Only boxes whose centre lies on the BEV grid count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import Detection, ObjectClass

THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)


@dataclass
class ScoredFrame:
    """One frame's predictions beside its ground truth, tagged with its context."""

    predictions: list[Detection]
    truth: list[Detection]
    context: str = ""


@dataclass
class DetectionMetrics:
    map: float
    ap: dict[str, dict[float, float]]  # class label -> threshold -> AP (NaN: no ground truth)
    frames: int
    truth_count: dict[str, int] = field(default_factory=dict)

    @property
    def ap_per_class(self) -> dict[str, float]:
        return {label: _nanmean(by_threshold.values()) for label, by_threshold in self.ap.items()}


def _nanmean(values: Iterable[float]) -> float:
    array = np.array(list(values), dtype=np.float64)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def _xy(detections: Sequence[Detection]) -> np.ndarray:
    return np.array([[d.box.x, d.box.y] for d in detections]).reshape(-1, 2)


def average_precision(
    frames: Sequence[ScoredFrame], object_class: ObjectClass, threshold_m: float
) -> float:
    """AP of one class at one centre-distance threshold; NaN when there is no ground truth."""
    truths = [_xy([d for d in f.truth if d.object_class == object_class]) for f in frames]
    total = sum(len(t) for t in truths)
    if total == 0:
        return float("nan")
    ranked = sorted(
        (
            (-d.score, frame_index, d)
            for frame_index, frame in enumerate(frames)
            for d in frame.predictions
            if d.object_class == object_class
        ),
        key=lambda item: (item[0], item[1]),
    )
    matched = [np.zeros(len(t), dtype=bool) for t in truths]
    hits = np.zeros(len(ranked), dtype=bool)
    for rank, (_, frame_index, detection) in enumerate(ranked):
        candidates = truths[frame_index]
        if not len(candidates):
            continue
        distance = np.hypot(candidates[:, 0] - detection.box.x, candidates[:, 1] - detection.box.y)
        distance[matched[frame_index]] = np.inf
        nearest = int(np.argmin(distance))
        if distance[nearest] < threshold_m:
            matched[frame_index][nearest] = True
            hits[rank] = True
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(ranked) + 1)
    recall = true_positives / total
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if ranked else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def on_grid(detections: Iterable[Detection], grid: BevGrid) -> list[Detection]:
    detections = list(detections)
    if not detections:
        return []
    inside = grid.contains(_xy(detections))
    return [d for d, keep in zip(detections, inside, strict=True) if keep]


def evaluate_detections(
    frames: Sequence[ScoredFrame],
    grid: BevGrid | None = None,
    thresholds_m: Sequence[float] = THRESHOLDS_M,
) -> DetectionMetrics:
    grid = grid or BevGrid()
    cropped = [
        ScoredFrame(on_grid(f.predictions, grid), on_grid(f.truth, grid), f.context) for f in frames
    ]
    ap = {c.label: {t: average_precision(cropped, c, t) for t in thresholds_m} for c in ObjectClass}
    counts = {
        c.label: sum(d.object_class == c for f in cropped for d in f.truth) for c in ObjectClass
    }
    values = [v for by_threshold in ap.values() for v in by_threshold.values()]
    return DetectionMetrics(_nanmean(values), ap, len(frames), counts)


def evaluate_per_context(
    frames: Sequence[ScoredFrame], grid: BevGrid | None = None
) -> dict[str, DetectionMetrics]:
    """Metrics over all frames (key ``all``) and over the frames of each context."""
    by_context: dict[str, list[ScoredFrame]] = defaultdict(list)
    for frame in frames:
        by_context[frame.context or "unlabelled"].append(frame)
    results = {"all": evaluate_detections(frames, grid)}
    results.update({c: evaluate_detections(fs, grid) for c, fs in sorted(by_context.items())})
    return results
