"""Fused scores that mean the same thing whichever branches ran.

Weighted box fusion scores an object by the share of branches that found it, so the
same object scores 0.9 when one confident branch ran and 0.3 when three ran and only one
saw it. Within a frame that ranks well; across frames whose selections differ (which is
what a gate produces) it does not, and dataset AP ranks detections across frames.

``ScoreCalibration`` replaces the score with a probability built as naive Bayes does:
a class prior plus, for every branch that *ran*, its evidence: a log-likelihood ratio
that grows with its score when it found the object, and a (negative) one when it ran
and found nothing there. Branches that did not run add nothing, so the probability is
comparable across selections. The weights are fitted by logistic regression on the
clusters of every branch (``train/calibration.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.types import ObjectClass

SCORE_FLOOR = 1e-3


def evidence(
    branch_names: tuple[str, ...], best: Mapping[str, float], ran: Iterable[str]
) -> np.ndarray:
    """Per branch (found, found x logit(score), ran but missed): (3 * branches,)."""
    ran = set(ran)
    values = np.zeros((3, len(branch_names)))
    for index, name in enumerate(branch_names):
        if name in best:
            score = min(max(float(best[name]), SCORE_FLOOR), 1 - SCORE_FLOOR)
            values[0, index] = 1.0
            values[1, index] = math.log(score / (1 - score))
        elif name in ran:
            values[2, index] = 1.0
    return values.reshape(-1)


@dataclass(frozen=True)
class ScoreCalibration:
    branch_names: tuple[str, ...]
    bias: np.ndarray  # (classes,)
    weights: np.ndarray  # (classes, 3 * branches), in the order of ``evidence``

    @property
    def fingerprint(self) -> str:
        """Short digest of the weights: tells which calibration a record was scored with."""
        digest = hashlib.sha1(self.bias.tobytes() + self.weights.tobytes()).hexdigest()
        return f"calibration-{digest[:12]}"

    def probabilities(
        self,
        classes: Sequence[ObjectClass],
        best: Sequence[Mapping[str, float]],
        ran: Iterable[str],
    ) -> list[float]:
        """P(a true object) for each cluster, given its class and each ran branch's best
        score in it; one matrix product for the frame's clusters."""
        if not classes:
            return []
        ran = tuple(ran)
        rows = np.stack([evidence(self.branch_names, found, ran) for found in best])
        index = np.array([int(c) for c in classes])
        logit = self.bias[index] + np.einsum("ij,ij->i", self.weights[index], rows)
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).tolist()


def scoring_name(calibration: ScoreCalibration | None) -> str:
    return calibration.fingerprint if calibration is not None else "uncalibrated"
