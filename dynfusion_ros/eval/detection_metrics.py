"""Detection metrics as nuScenes defines them, so our figures compare with papers'.

``map`` is nuScenes' mAP: centre-distance matching in BEV at 0.5/1/2/4 m, predictions of
each class ranked by score over the whole set of frames, precision sampled at 101
recalls, and the part below 10 % recall or 10 % precision clipped away. Boxes count when
their centre is on the BEV grid (the detector sees nothing beyond it) and nearer to the
ego origin than nuScenes' range for their class (car 50 m, pedestrian and cyclist 40 m).
The true-positive errors are the devkit's, at the 2 m threshold: translation (m), scale
(1 - IoU of the boxes aligned) and orientation (rad), averaged over the operating points
above 10 % recall. Every step follows nuscenes-devkit's ``accumulate``, ``calc_ap`` and
``calc_tp`` (including its precision, which is *not* made monotone before sampling), and a
test checks the figures against the devkit itself to 1e-9.

Where we differ from a nuScenes leaderboard, and why:
- A class without ground truth in the frames scored (a context may have no cyclist) is
  left out of the means; the devkit would count it as AP 0 and error 1.
  ``classes_without_truth`` says which were left out.
- ``nds3`` is NDS over the three TP errors we estimate: we predict no velocity or
  attribute, so ``(5 mAP + sum over ATE, ASE, AOE of max(0, 1 - error)) / 8``.
- Equal scores: the box later in the frames' order (frames as given, then the detector's
  list order) ranks first, as the devkit's reversed sort of (score, index) pairs does.
- ``map_all_points`` is the figure this package printed before (grid only, no range
  limits, monotone precision over all recall points, no clipping), kept for one release
  so that older numbers can be compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import Detection, ObjectClass

THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD_M = 2.0
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
RECALLS = np.linspace(0.0, 1.0, 101)
CLASS_RANGE_M: Mapping[ObjectClass, float] = {
    ObjectClass.CAR: 50.0,
    ObjectClass.PEDESTRIAN: 40.0,
    ObjectClass.CYCLIST: 40.0,
}
TP_ERRORS = ("mate_m", "mase", "maoe_rad")  # translation, scale, orientation
MAP_WEIGHT = 5.0  # NDS's weight of mAP against each TP score
# devkit: the first sample above min recall, and everything from it on
_FIRST_RECALL_INDEX = round(100 * MIN_RECALL) + 1


@dataclass
class ScoredFrame:
    """One frame's predictions beside its ground truth, tagged with its context.

    ``stamp_ns`` and ``drive`` (its bag) name the frame in exported results."""

    predictions: list[Detection]
    truth: list[Detection]
    context: str = ""
    stamp_ns: int | None = None
    drive: str = ""


@dataclass
class DetectionMetrics:
    """Metrics over a set of frames. AP and errors of a class without ground truth are
    NaN and left out of every mean."""

    map: float
    ap: dict[str, dict[float, float]]  # class label -> threshold -> AP
    tp_errors: dict[str, dict[str, float]]  # class label -> TP_ERRORS name -> error
    map_all_points: float
    frames: int
    truth_count: dict[str, int] = field(default_factory=dict)  # boxes that count, per class

    @property
    def ap_per_class(self) -> dict[str, float]:
        return {label: _nanmean(by_threshold.values()) for label, by_threshold in self.ap.items()}

    @property
    def classes_without_truth(self) -> list[str]:
        return [label for label, count in self.truth_count.items() if count == 0]

    @property
    def mean_tp_errors(self) -> dict[str, float]:
        return {
            name: _nanmean(errors[name] for errors in self.tp_errors.values()) for name in TP_ERRORS
        }

    @property
    def nds3(self) -> float:
        scores = [max(0.0, 1.0 - error) for error in self.mean_tp_errors.values()]
        return (MAP_WEIGHT * self.map + sum(scores)) / (MAP_WEIGHT + len(scores))


def _nanmean(values: Iterable[float]) -> float:
    array = np.array(list(values), dtype=np.float64)
    return float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")


def _xy(detections: Sequence[Detection]) -> np.ndarray:
    return np.array([[d.box.x, d.box.y] for d in detections]).reshape(-1, 2)


def on_grid(detections: Iterable[Detection], grid: BevGrid) -> list[Detection]:
    detections = list(detections)
    if not detections:
        return []
    inside = grid.contains(_xy(detections))
    return [d for d, keep in zip(detections, inside, strict=True) if keep]


def counted(detections: Iterable[Detection], grid: BevGrid) -> list[Detection]:
    """The boxes nuScenes-style metrics score: on the grid and within their class range."""
    return [
        d
        for d in on_grid(detections, grid)
        if np.hypot(d.box.x, d.box.y) < CLASS_RANGE_M[d.object_class]
    ]


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Indices by score, high first; equal scores later index first (the devkit's order)."""
    return np.lexsort((-np.arange(len(scores)), -scores))


def _yaw_error(truth_yaw: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """|smallest angle from ``yaw`` to ``truth_yaw``| in [0, pi]."""
    return np.abs((truth_yaw - yaw + np.pi) % (2 * np.pi) - np.pi)


def _scale_error(truth_size: np.ndarray, size: np.ndarray) -> np.ndarray:
    """1 - IoU of two boxes with the same centre and heading."""
    intersection = np.prod(np.minimum(truth_size, size), axis=-1)
    union = np.prod(truth_size, axis=-1) + np.prod(size, axis=-1) - intersection
    return 1.0 - intersection / union


def _geometry(detections: Sequence[Detection]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (N, 2), sizes (N, 3) as width, length, height, and yaws (N,)."""
    boxes = [d.box for d in detections]
    size = np.array([[b.width, b.length, b.height] for b in boxes]).reshape(-1, 3)
    return _xy(detections), size, np.array([b.yaw for b in boxes], dtype=np.float64)


@dataclass
class _ClassMatches:
    """One class matched in every frame, kept per prediction so that any subset of the
    frames (one context) is scored without matching again: matches never cross frames.
    Predictions are in frame order, then the detector's order."""

    scores: np.ndarray  # (P,)
    frame: np.ndarray  # (P,) index of each prediction's frame
    hits: dict[float, np.ndarray]  # threshold -> (P,) matched a ground-truth box
    errors: np.ndarray  # (P, 3) TP errors at TP_THRESHOLD_M, NaN where unmatched
    truth_frame: np.ndarray  # (G,) index of each ground-truth box's frame


def _match_frame(
    predictions: Sequence[Detection], truth: Sequence[Detection]
) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """Greedy matching in rank order: each prediction takes the nearest unmatched truth
    within the threshold. Returns hits per threshold and the TP errors at 2 m."""
    count = len(predictions)
    hits = {t: np.zeros(count, dtype=bool) for t in THRESHOLDS_M}
    errors = np.full((count, len(TP_ERRORS)), np.nan)
    if not count or not truth:
        return hits, errors
    xy, size, yaw = _geometry(predictions)
    truth_xy, truth_size, truth_yaw = _geometry(truth)
    offset = xy[:, None, :] - truth_xy[None, :, :]
    distance = np.sqrt(offset[..., 0] ** 2 + offset[..., 1] ** 2)
    order = _ranking(np.array([d.score for d in predictions]))
    partner = np.full(count, -1)  # the truth each prediction matched at TP_THRESHOLD_M
    for threshold in THRESHOLDS_M:
        taken = np.zeros(len(truth), dtype=bool)
        for row in order[distance[order].min(axis=1) < threshold]:
            free = np.where(taken, np.inf, distance[row])
            nearest = int(np.argmin(free))
            if free[nearest] < threshold:
                taken[nearest] = True
                hits[threshold][row] = True
                if threshold == TP_THRESHOLD_M:
                    partner[row] = nearest
    rows = np.flatnonzero(partner >= 0)
    matched = partner[rows]
    errors[rows] = np.stack(
        [
            distance[rows, matched],
            _scale_error(truth_size[matched], size[rows]),
            _yaw_error(truth_yaw[matched], yaw[rows]),
        ],
        axis=1,
    )
    return hits, errors


def _match_class(
    frames: Sequence[tuple[list[Detection], list[Detection]]], object_class: ObjectClass
) -> _ClassMatches:
    scores, frame_of, truth_frame, errors = [], [], [], []
    hits: dict[float, list[np.ndarray]] = {t: [] for t in THRESHOLDS_M}
    for index, (predictions, truth) in enumerate(frames):
        mine = [d for d in predictions if d.object_class == object_class]
        theirs = [d for d in truth if d.object_class == object_class]
        frame_hits, frame_errors = _match_frame(mine, theirs)
        scores += [d.score for d in mine]
        frame_of += [index] * len(mine)
        truth_frame += [index] * len(theirs)
        errors.append(frame_errors)
        for threshold, flags in frame_hits.items():
            hits[threshold].append(flags)
    return _ClassMatches(
        np.array(scores, dtype=np.float64),
        np.array(frame_of, dtype=np.int64),
        {t: np.concatenate(flags) if flags else np.zeros(0, bool) for t, flags in hits.items()},
        np.concatenate(errors) if errors else np.zeros((0, len(TP_ERRORS))),
        np.array(truth_frame, dtype=np.int64),
    )


def _sampled_curve(
    hits: np.ndarray, scores: np.ndarray, truth_total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and score at the 101 recall samples (devkit: zero past the last recall)."""
    true_positives = np.cumsum(hits).astype(np.float64)
    false_positives = np.cumsum(~hits).astype(np.float64)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / truth_total
    return (
        np.interp(RECALLS, recall, precision, right=0),
        np.interp(RECALLS, recall, scores, right=0),
    )


def _nuscenes_ap(precision: np.ndarray) -> float:
    clipped = np.maximum(precision[_FIRST_RECALL_INDEX:] - MIN_PRECISION, 0.0)
    return float(np.mean(clipped)) / (1.0 - MIN_PRECISION)


def _all_points_ap(hits: np.ndarray, truth_total: int) -> float:
    """Area under the monotone precision-recall curve over every recall step."""
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], true_positives / truth_total]))
    return float(np.sum(steps * envelope))


def _tp_errors(
    errors: np.ndarray, match_scores: np.ndarray, sampled_scores: np.ndarray
) -> np.ndarray:
    """Each error's running mean over the matches, read at the sampled operating points
    and averaged from the first above MIN_RECALL to the highest recall reached."""
    running = np.cumsum(errors, axis=0) / np.arange(1, len(errors) + 1)[:, None]
    reached = np.flatnonzero(sampled_scores)
    last = int(reached[-1]) if len(reached) else 0
    if last < _FIRST_RECALL_INDEX:
        return np.ones(len(TP_ERRORS))
    sampled = np.stack(
        [
            np.interp(sampled_scores[::-1], match_scores[::-1], column[::-1])[::-1]
            for column in running.T
        ]
    )
    return sampled[:, _FIRST_RECALL_INDEX : last + 1].mean(axis=1)


def _ranked_in(matches: _ClassMatches, frames: np.ndarray) -> tuple[np.ndarray, int]:
    """The class's predictions in the frames of the boolean mask ``frames``, ranked, and
    the number of ground-truth boxes those frames hold."""
    chosen = np.flatnonzero(frames[matches.frame])
    truth_total = int(np.count_nonzero(frames[matches.truth_frame]))
    return chosen[_ranking(matches.scores[chosen])], truth_total


def _class_figures(
    matches: _ClassMatches, frames: np.ndarray
) -> tuple[dict[float, float], np.ndarray, int]:
    """AP per threshold and TP errors of one class over the frames in the boolean mask
    ``frames``; the number of ground-truth boxes they hold."""
    ranked, truth_total = _ranked_in(matches, frames)
    if truth_total == 0:
        return {t: float("nan") for t in THRESHOLDS_M}, np.full(len(TP_ERRORS), np.nan), 0
    scores = matches.scores[ranked]
    ap, errors = {}, np.ones(len(TP_ERRORS))
    for threshold, all_hits in matches.hits.items():
        hits = all_hits[ranked]
        if not hits.any():  # devkit: no match at all is AP 0 and error 1
            ap[threshold] = 0.0
            continue
        precision, sampled_scores = _sampled_curve(hits, scores, truth_total)
        ap[threshold] = _nuscenes_ap(precision)
        if threshold == TP_THRESHOLD_M:
            errors = _tp_errors(matches.errors[ranked][hits], scores[hits], sampled_scores)
    return ap, errors, truth_total


def _all_points_map(matches: Sequence[_ClassMatches], frames: np.ndarray) -> float:
    values = []
    for class_matches in matches:
        ranked, truth_total = _ranked_in(class_matches, frames)
        if truth_total:
            values += [_all_points_ap(h[ranked], truth_total) for h in class_matches.hits.values()]
    return _nanmean(values)


class _Scorer:
    """Matches every class once (nuScenes filters, and grid only for the old figure),
    then scores any subset of the frames."""

    def __init__(self, frames: Sequence[ScoredFrame], grid: BevGrid) -> None:
        nuscenes = [(counted(f.predictions, grid), counted(f.truth, grid)) for f in frames]
        grid_only = [(on_grid(f.predictions, grid), on_grid(f.truth, grid)) for f in frames]
        self.matches = {c: _match_class(nuscenes, c) for c in ObjectClass}
        self.grid_matches = [_match_class(grid_only, c) for c in ObjectClass]

    def metrics(self, frames: np.ndarray) -> DetectionMetrics:
        ap, tp_errors, counts = {}, {}, {}
        for object_class, matches in self.matches.items():
            by_threshold, errors, total = _class_figures(matches, frames)
            ap[object_class.label] = by_threshold
            tp_errors[object_class.label] = dict(zip(TP_ERRORS, map(float, errors), strict=True))
            counts[object_class.label] = total
        values = [v for by_threshold in ap.values() for v in by_threshold.values()]
        return DetectionMetrics(
            map=_nanmean(values),
            ap=ap,
            tp_errors=tp_errors,
            map_all_points=_all_points_map(self.grid_matches, frames),
            frames=int(np.count_nonzero(frames)),
            truth_count=counts,
        )


def evaluate_detections(
    frames: Sequence[ScoredFrame], grid: BevGrid | None = None
) -> DetectionMetrics:
    return _Scorer(frames, grid or BevGrid()).metrics(np.ones(len(frames), dtype=bool))


def evaluate_per_context(
    frames: Sequence[ScoredFrame], grid: BevGrid | None = None
) -> dict[str, DetectionMetrics]:
    """Metrics over all frames (key ``all``) and over the frames of each context."""
    scorer = _Scorer(frames, grid or BevGrid())
    contexts = np.array([f.context or "unlabelled" for f in frames], dtype=object)
    results = {"all": scorer.metrics(np.ones(len(frames), dtype=bool))}
    for context in sorted(set(contexts)):
        results[context] = scorer.metrics(contexts == context)
    return results


def classes_left_out(missing: Mapping[str, Sequence[str]]) -> str:
    """One sentence naming, per context, the classes its mean leaves out ('' if none)."""
    parts = [
        f"{context}: no {', '.join(classes)}" for context, classes in missing.items() if classes
    ]
    if not parts:
        return ""
    return "Means leave out classes without ground truth (" + "; ".join(parts) + ")."
