"""The gate: predict how well every candidate selection of branches would do on this
frame, then take the best one whose energy fits the budget.

With six branches there are 63 non-empty selections, so the choice is exact: enumerate,
drop those needing an unavailable sensor or costing more than the budget, take the
highest predicted quality (ties go to the richer selection). The quality predictor is a small MLP
from context features to the per-frame AP of every selection (``core/quality.py``),
trained by ``dynfusion train gate``; it also names the likely context.

It runs in numpy: a 20 kB network called once a frame is cheaper without torch's
per-call overhead, and the gate's own cost counts against the budget it enforces.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from dynfusion_ros.core.branches.registry import BRANCHES, branch
from dynfusion_ros.core.calibration import ScoreCalibration
from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.core.types import Modality

GATE_FORMAT = 1
ENERGY_TOLERANCE = 1e-9  # relative: sums of the same prices in another order
FEATURE_CLIP = 10.0  # standard deviations from the training mean a feature may lie
SENSORS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)

# Used when no gate model is loaded or the sensor set was never seen in training: each
# branch's overall held-out nuScenes mAP from models/MODEL_CARD.md, rounded. A selection
# is worth its best branch, so the fallback picks the strongest single branch that fits.
PRIOR_BRANCH_QUALITY: Mapping[str, float] = {
    "camera": 0.18,
    "lidar": 0.68,
    "radar": 0.16,
    "camera_lidar": 0.77,
    "camera_radar": 0.42,
    "lidar_radar": 0.78,
}


def all_selections(branch_names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every non-empty subset of the branches, smallest first, in branch order."""
    return tuple(
        combo
        for size in range(1, len(branch_names) + 1)
        for combo in itertools.combinations(branch_names, size)
    )


class GateModelError(RuntimeError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Policy:
    """How a frame's branches are chosen: ``dynamic``, ``all``, ``static:<b>+<b>``,
    ``topk:<k>`` or ``oracle`` (offline only: needs ground truth)."""

    kind: str
    branches: tuple[str, ...] = ()
    k: int = 0

    @property
    def text(self) -> str:
        if self.kind == "static":
            return "static:" + "+".join(self.branches)
        if self.kind == "topk":
            return f"topk:{self.k}"
        return self.kind

    @classmethod
    def parse(cls, text: str) -> Policy:
        """A policy from its text; ValueError saying what is wrong otherwise."""
        kind, _, argument = text.strip().partition(":")
        usage = "use dynamic, all, oracle, static:<branch>+<branch>... or topk:<k>"
        if kind in ("dynamic", "all", "oracle") and not argument:
            return cls(kind)
        if kind == "static" and argument:
            names = tuple(name.strip() for name in argument.split("+"))
            for name in names:
                branch(name)  # raises naming the known branches
            if len(set(names)) != len(names):
                raise ValueError(f"policy {text!r} names a branch twice")
            return cls(kind, tuple(sorted(names, key=list(BRANCHES).index)))
        if kind == "topk" and argument:
            try:
                k = int(argument)
            except ValueError:
                raise ValueError(f"policy {text!r}: k must be a whole number") from None
            if not 1 <= k <= len(BRANCHES):
                raise ValueError(f"policy {text!r}: k must be between 1 and {len(BRANCHES)}")
            return cls(kind, k=k)
        raise ValueError(f"unknown policy {text!r}; {usage}")


@dataclass
class GateModel:
    """Standardised features -> ReLU MLP -> sigmoid quality per selection + context logits."""

    selections: tuple[tuple[str, ...], ...]
    contexts: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,))
    seen_sensor_sets: frozenset[str] = frozenset()  # e.g. "camera+lidar+radar"
    metadata: Mapping[str, object] = field(default_factory=dict)
    calibration: ScoreCalibration | None = None  # fused-score calibration, fitted beside

    def predict(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quality of every selection (0..1) and probability of every context."""
        # missing (NaN) at the training mean; beyond the clip (an infinite age, an absurd
        # count) at the clip: unbounded, one feature would overflow every score to NaN
        standardised = np.clip((values - self.mean) / self.scale, -FEATURE_CLIP, FEATURE_CLIP)
        hidden = np.nan_to_num(standardised, nan=0.0)
        for weight, bias in self.layers[:-1]:
            hidden = np.maximum(weight @ hidden + bias, 0.0)
        weight, bias = self.layers[-1]
        out = weight @ hidden + bias
        quality = 1.0 / (1.0 + np.exp(-out[: len(self.selections)]))
        logits = out[len(self.selections) :]
        odds = np.exp(logits - logits.max()) if len(logits) else logits
        return quality, odds / odds.sum() if len(odds) else odds

    def save(self, path: Path) -> Path:
        """``<name>.json`` (description) and ``<name>.safetensors`` (arrays) beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "scale": self.scale}
        for index, (weight, bias) in enumerate(self.layers):
            arrays[f"layer{index}.weight"] = weight
            arrays[f"layer{index}.bias"] = bias
        if self.calibration is not None:
            arrays["calibration.bias"] = self.calibration.bias
            arrays["calibration.weights"] = self.calibration.weights
        save_file(
            {k: np.ascontiguousarray(v, np.float64) for k, v in arrays.items()},
            str(path.with_suffix(".safetensors")),
        )
        document = {
            "format": "dynfusion_ros gate",
            "format_version": GATE_FORMAT,
            "weights": path.with_suffix(".safetensors").name,
            "features": list(FEATURE_NAMES),
            "selections": ["+".join(s) for s in self.selections],
            "contexts": list(self.contexts),
            "layers": len(self.layers),
            "seen_sensor_sets": sorted(self.seen_sensor_sets),
            "calibration_branches": list(self.calibration.branch_names) if self.calibration else [],
            "metadata": dict(self.metadata),
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> GateModel:
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise GateModelError(path, "gate model not found") from None
        except (OSError, ValueError) as error:
            raise GateModelError(path, f"cannot read the gate model: {error}") from None
        if document.get("format_version") != GATE_FORMAT:
            raise GateModelError(path, f"format_version {document.get('format_version')!r}")
        if document.get("features") != list(FEATURE_NAMES):
            raise GateModelError(
                path, "trained on other context features; retrain with `dynfusion train gate`"
            )
        selections = tuple(tuple(s.split("+")) for s in document["selections"])
        unknown = {name for s in selections for name in s} - set(BRANCHES)
        if unknown:
            raise GateModelError(path, f"unknown branches {sorted(unknown)}")
        weights_path = path.with_name(document["weights"])
        try:
            arrays = load_file(str(weights_path))
            layers = [
                (arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"])
                for i in range(document["layers"])
            ]
            calibration = None
            if document.get("calibration_branches"):
                calibration = ScoreCalibration(
                    tuple(document["calibration_branches"]),
                    arrays["calibration.bias"],
                    arrays["calibration.weights"],
                )
            model = cls(
                selections,
                tuple(document["contexts"]),
                arrays["mean"],
                arrays["scale"],
                layers,
                frozenset(document.get("seen_sensor_sets", [])),
                document.get("metadata", {}),
                calibration,
            )
        except FileNotFoundError:
            raise GateModelError(weights_path, "gate weights not found") from None
        except (SafetensorError, OSError, KeyError) as error:
            raise GateModelError(weights_path, f"corrupt gate weights: {error}") from None
        if layers[-1][0].shape[0] != len(selections) + len(model.contexts):
            raise GateModelError(weights_path, "output size does not match the selection table")
        if layers[0][0].shape[1] != len(FEATURE_NAMES):
            raise GateModelError(weights_path, "input size does not match the feature table")
        return model


def sensor_set(features: ContextFeatures) -> str:
    return "+".join(s.value for s in SENSORS if features.available(s)) or "none"


@dataclass(frozen=True)
class Decision:
    """What the gate chose for one frame and why."""

    chosen: tuple[str, ...]
    utility: float  # predicted quality of the chosen selection (NaN when not predicted)
    energy_j: float  # planned energy of the chosen selection, overhead included
    branch_utility: Mapping[str, float]  # predicted quality of each branch alone
    context_label: str = ""
    context_scores: Mapping[str, float] = field(default_factory=dict)
    fallback: str = ""  # why the prior was used instead of the model, if it was
    over_budget: bool = False  # nothing available fits the budget: the cheapest ran


class Gate:
    """Chooses branches per frame under a policy and a budget, with hysteresis.

    ``hysteresis_frames``: a different selection must look better by ``margin`` on this
    many frames in a row before the dynamic policy switches to it (1: at once). A current
    selection that stops fitting (budget lowered, sensor lost) is left at once.
    """

    def __init__(
        self,
        profile: EnergyProfile,
        model: GateModel | None = None,
        *,
        branch_names: Sequence[str] = tuple(BRANCHES),
        hysteresis_frames: int = 2,
        margin: float = 0.01,
    ) -> None:
        if hysteresis_frames < 1:
            raise ValueError(f"hysteresis_frames must be at least 1, got {hysteresis_frames}")
        profile.check_covers(branch_names)
        self.profile, self.model = profile, model
        self.branch_names = tuple(branch_names)
        self.selections = model.selections if model else all_selections(self.branch_names)
        self.energy_j = np.array([profile.selection_energy_j(s) for s in self.selections])
        self.stem_mask = np.array(
            [[any(stem in branch(n).stems for n in s) for stem in SENSORS] for s in self.selections]
        )
        self.singles = {s[0]: i for i, s in enumerate(self.selections) if len(s) == 1}
        # a selection is worth its best branch; each extra branch costs a hair, so the
        # fallback runs that branch alone rather than everything that contains it
        self.prior = np.array(
            [max(PRIOR_BRANCH_QUALITY[n] for n in s) - 1e-3 * (len(s) - 1) for s in self.selections]
        )
        self.hysteresis_frames, self.margin = hysteresis_frames, margin
        self.reset()

    def reset(self) -> None:
        self._current: int | None = None
        self._challenger: int | None = None
        self._wins = 0

    @property
    def cheapest_energy_j(self) -> float:
        return float(self.energy_j.min())

    def all_energy_j(self) -> float:
        return self.profile.selection_energy_j(self.branch_names)

    def _usable(self, features: ContextFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(which sensors are available, which selections have every stem they need)."""
        available = np.array([features.available(s) for s in SENSORS])
        return available, ~(self.stem_mask & ~available).any(axis=1)

    def cheapest_usable_j(self, features: ContextFeatures) -> float:
        """The least a frame with these sensors can spend on branches, overhead included."""
        _, usable = self._usable(features)
        energies = self.energy_j[usable]
        return float(energies.min()) if energies.size else self.profile.overhead_total_j

    def _predict(self, features: ContextFeatures) -> tuple[np.ndarray, dict[str, float], str]:
        if self.model is None:
            return self.prior, {}, "no gate model loaded"
        if sensor_set(features) not in self.model.seen_sensor_sets:
            return self.prior, {}, f"sensor set {sensor_set(features)} not seen in training"
        quality, odds = self.model.predict(features.values)
        return quality, dict(zip(self.model.contexts, map(float, odds), strict=True)), ""

    def decide(
        self,
        features: ContextFeatures,
        policy: Policy,
        budget_j: float | None,
        true_quality: np.ndarray | None = None,
    ) -> Decision:
        """The selection for this frame. ``true_quality`` (per selection, from ground
        truth) is required by, and only used by, the oracle policy."""
        quality, contexts, fallback = self._predict(features)
        available, usable = self._usable(features)
        singles = {n: float(quality[i]) for n, i in self.singles.items()}
        label = max(contexts, key=contexts.get) if contexts else ""
        common = {"branch_utility": singles, "context_label": label, "context_scores": contexts}
        if policy.kind in ("all", "static", "topk"):
            names = self._fixed(policy, singles, available)
            index = self.selections.index(names) if names else None
            utility = float(quality[index]) if index is not None else float("nan")
            energy = self.profile.selection_energy_j(names)
            over = budget_j is not None and energy > budget_j * (1 + ENERGY_TOLERANCE)
            return Decision(names, utility, energy, fallback=fallback, over_budget=over, **common)
        if policy.kind == "oracle":
            if true_quality is None:
                raise ValueError("the oracle policy needs ground truth (offline evaluation only)")
            quality, fallback = true_quality, ""
        if not usable.any():
            self._current = None
            return Decision(
                (), float("nan"), self.profile.overhead_total_j, fallback=fallback, **common
            )
        limit = budget_j * (1 + ENERGY_TOLERANCE) if budget_j is not None else np.inf
        fits = usable & (self.energy_j <= limit)
        over = not fits.any()
        candidates = np.flatnonzero(fits if not over else usable)
        if over:  # nothing fits: the cheapest usable selection, reported as a violation
            best = int(candidates[np.argmin(self.energy_j[candidates])])
        else:
            # a tie means the frame's AP cannot tell the selections apart; the richer one
            # gives better-founded scores across frames, so the budget is spent on it
            order = np.lexsort((-self.energy_j[candidates], -quality[candidates]))
            best = int(candidates[order[0]])
        if policy.kind == "dynamic":
            best = self._hold(best, quality, fits if not over else usable)
        return Decision(
            self.selections[best],
            float(quality[best]),
            float(self.energy_j[best]),
            fallback=fallback,
            over_budget=over,
            **common,
        )

    def _fixed(
        self, policy: Policy, singles: Mapping[str, float], available: np.ndarray
    ) -> tuple[str, ...]:
        runnable = [
            name
            for name in self.branch_names
            if all(available[SENSORS.index(stem)] for stem in branch(name).stems)
        ]
        if policy.kind == "all":
            return tuple(runnable)
        if policy.kind == "static":
            return tuple(name for name in policy.branches if name in runnable)
        ranked = sorted(runnable, key=lambda name: -singles[name])[: policy.k]
        return tuple(name for name in self.branch_names if name in ranked)

    def _hold(self, best: int, quality: np.ndarray, allowed: np.ndarray) -> int:
        """Hysteresis: keep the current selection unless ``best`` keeps beating it."""
        current = self._current
        if current is None or not allowed[current] or self.hysteresis_frames == 1:
            self._current, self._challenger, self._wins = best, None, 0
            return best
        if best == current or quality[best] - quality[current] <= self.margin:
            self._challenger, self._wins = None, 0
            return current
        self._wins = self._wins + 1 if best == self._challenger else 1
        self._challenger = best
        if self._wins >= self.hysteresis_frames:
            self._current, self._challenger, self._wins = best, None, 0
        return self._current
