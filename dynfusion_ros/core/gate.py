"""The gate: predict how well every configuration of the fused detector would do on this
frame, then take the best one whose energy fits the budget.

A configuration is one level per stem or none (``detector/levels.py``); there are 47, and
``tracks`` (no stem, no head: the last detections predicted to now), so the choice is
exact: enumerate, drop those needing a sensor that is not there (or features to reuse
that the last frame did not compute, or tracks older than ``MAX_HELD_FRAMES``), drop those
over what the budget allows this frame, take the highest value (near-ties go to the
dearer one).

The budget is a *mean* energy per frame, kept over a window of frames (``EnergyAccount``):
what a frame does not spend is saved, up to the window's worth, for a dearer frame later,
and no frame spends more than its budget plus the savings. A battery or a thermal limit
is a limit on mean power; a per-frame cap would also forbid ever running a stem dearer
than the budget, and with it the reuse of its features on the cheap frames after (window
1 is that cap). The value of a configuration is its utility less an energy price, which
the account raises while the gate would spend above the budget and lowers while below, so
that the frames mix the configurations that pay most per joule; a configuration that
detects is valued with the tracks that may follow it (``Gate._with_tracks``). The quality
predictor is a small MLP from context features to the per-frame quality of every configuration
(``core/quality.py``), trained by ``dynfusion train gate``; it also names the likely
context, and the utility blends the predicted quality with each configuration's dataset
mAP in that context (``GateModel.utility``).

Reuse is offered only for a stem that ran at its full level on the previous frame: the
detector remembers full-level features only, one frame back is what its reuse was
validated on, and the benchmark's recorded outputs then replay exactly what a policy
would have run. Tracks are offered for up to ``MAX_HELD_FRAMES`` frames after the detector
last ran. The model predicts the worth of tracks of the full configuration one frame on;
tracks of what really ran keep the same share of its worth, and each further frame
takes the model's ``hold_penalty`` off (fitted on the training drives).

It runs in numpy: a small network called once a frame is cheaper without torch's
per-call overhead, and the gate's own cost counts against the budget it enforces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from dynfusion_ros import strict_json
from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.detector.levels import (
    CHOICE_NAMES,
    FULL,
    FULL_CONFIGURATION,
    REUSE,
    STEMS,
    TRACKS,
    TRACKS_CONFIGURATION,
    Configuration,
    Option,
    all_configurations,
    choices,
)
from dynfusion_ros.core.energy import EnergyProfile

GATE_FORMAT = 4
READABLE_GATE_FORMATS = (3, 4)  # 3: before tracks (no hold_penalty; it offers no tracks)
ENERGY_TOLERANCE = 1e-9  # relative: sums of the same prices in another order
BUDGET_WINDOW_FRAMES = 10  # the budget is a mean over this many frames (1 s at 10 Hz)
# the energy price: utility (0-1) a configuration must add per budget's worth of energy;
# it moves by PRICE_STEP per frame for each budget the gate wants above the budget
PRICE_STEP = 0.01
MAX_PRICE = 10.0
FEATURE_CLIP = 10.0  # standard deviations from the training mean a feature may lie
MAX_HELD_FRAMES = 3  # frames in a row that may run tracks (0.3 s at 10 Hz)
DEFAULT_HOLD_PENALTY = 0.05  # quality lost per further frame of tracks, without a model

SINGLE_STEMS = tuple(Configuration((Option(stem, FULL),)) for stem in STEMS)
"""What the late-fusion baseline runs: every stem alone, its detections fused after."""

# Used when no gate model is loaded or the sensor set was never seen in training: each
# option alone, its held-out nuScenes mAP in models/MODEL_CARD.md, rounded. Options
# combine as independent chances of finding an object, so a richer configuration is
# never worth less and the fallback spends what the budget allows.
PRIOR_OPTION_QUALITY: Mapping[str, float] = {
    "camera": 0.21,
    "camera_half": 0.18,
    "camera_reuse": 0.19,
    "lidar": 0.72,
    "lidar_early": 0.64,
    "lidar_reuse": 0.55,
    "radar": 0.19,
    "radar_reuse": 0.13,
    TRACKS: 0.79,  # 0.96 of the full configuration's 0.82: tracks kept 82.3 of its 85.7
}


def static_configurations() -> tuple[Configuration, ...]:
    """The configurations a static policy can run frame after frame: no reuse and no
    tracks (nothing would compute the features to reuse, or the detections to track)."""
    return tuple(c for c in all_configurations() if all(o.runs_stem for o in c.options))


class GateModelError(RuntimeError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Policy:
    """How a frame's configuration is chosen: ``dynamic``, ``full``,
    ``static:<configuration>``, ``late`` (every stem alone, fused late: HydraFusion's
    baseline) or ``oracle`` (offline only: needs ground truth)."""

    kind: str
    configuration: Configuration | None = None

    @property
    def text(self) -> str:
        if self.kind == "static":
            return f"static:{self.configuration.text}"
        return self.kind

    @classmethod
    def parse(cls, text: str) -> Policy:
        """A policy from its text; ValueError saying what is wrong otherwise."""
        kind, _, argument = text.strip().partition(":")
        usage = "use dynamic, full, late, oracle or static:<option>+<option>..."
        if kind in ("dynamic", "full", "late", "oracle") and not argument:
            return cls(kind)
        if kind == "static" and argument:
            configuration = Configuration.parse(argument)  # raises naming the options
            reused = [o.name for o in configuration.options if not o.runs_stem]
            reused += [TRACKS] if configuration.tracks else []
            if reused:
                raise ValueError(
                    f"policy {text!r}: a static configuration cannot reuse ({', '.join(reused)}):"
                    " nothing would run the stem to compute the features (or the detector"
                    " to find what tracks follow)"
                )
            return cls(kind, configuration)
        raise ValueError(f"unknown policy {text!r}; {usage}")


@dataclass
class GateModel:
    """Standardised features -> ReLU MLP -> sigmoid quality per configuration + context
    logits."""

    configurations: tuple[Configuration, ...]
    contexts: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,))
    seen_sensor_sets: frozenset[str] = frozenset()  # e.g. "camera+lidar+radar"
    metadata: Mapping[str, object] = field(default_factory=dict)
    # (configurations, contexts): each configuration's dataset mAP in each context on
    # the training drives, and how much of the utility it makes up (``utility``)
    dataset_quality: np.ndarray | None = None
    blend: float = 0.0
    # utilities this close to the best are a tie, and a tie goes to the dearer
    # configuration: differences below what the training drives can resolve should not
    # leave budget unspent (fitted with the blend)
    tie_margin: float = 0.0
    # quality tracks lose for each frame beyond the first since the detector last ran
    hold_penalty: float = DEFAULT_HOLD_PENALTY

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend}")
        if not 0.0 <= self.hold_penalty <= 1.0:
            raise ValueError(f"hold_penalty must be in [0, 1], got {self.hold_penalty}")
        if not 0.0 <= self.tie_margin < 1.0:
            raise ValueError(f"tie_margin must be in [0, 1), got {self.tie_margin}")
        expected = (len(self.configurations), len(self.contexts))
        if self.dataset_quality is not None and self.dataset_quality.shape != expected:
            raise ValueError(
                f"dataset_quality has shape {self.dataset_quality.shape}, expected {expected}"
            )

    def predict(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quality of every configuration (0..1) and probability of every context."""
        # missing (NaN) at the training mean; beyond the clip (an infinite age, an absurd
        # count) at the clip: unbounded, one feature would overflow every score to NaN
        hidden = np.clip((values - self.mean) / self.scale, -FEATURE_CLIP, FEATURE_CLIP)
        hidden[np.isnan(hidden)] = 0.0
        for weight, bias in self.layers[:-1]:
            hidden = np.maximum(weight @ hidden + bias, 0.0)
        weight, bias = self.layers[-1]
        out = weight @ hidden + bias
        quality = 1.0 / (1.0 + np.exp(-out[: len(self.configurations)]))
        logits = out[len(self.configurations) :]
        odds = np.exp(logits - logits.max()) if len(logits) else logits
        return quality, odds / odds.sum() if len(odds) else odds

    def utility(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the gate maximises, and the context probabilities. The per-frame quality
        alone does not rank configurations as the dataset metric does: mAP ranks every
        frame's boxes together, so a configuration whose scores mean the same from frame
        to frame is worth more than its frames' qualities say. The utility mixes in each
        configuration's dataset mAP in the likely context, by ``blend`` (fitted on
        held-out training drives: ``train/gate.py``)."""
        quality, odds = self.predict(values)
        if self.dataset_quality is None or not self.blend:
            return quality, odds
        return (1.0 - self.blend) * quality + self.blend * (self.dataset_quality @ odds), odds

    def save(self, path: Path) -> Path:
        """``<name>.json`` (description) and ``<name>.safetensors`` (arrays) beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "scale": self.scale}
        if self.dataset_quality is not None:
            arrays["dataset_quality"] = self.dataset_quality
        for index, (weight, bias) in enumerate(self.layers):
            arrays[f"layer{index}.weight"] = weight
            arrays[f"layer{index}.bias"] = bias
        save_file(
            {k: np.ascontiguousarray(v, np.float64) for k, v in arrays.items()},
            str(path.with_suffix(".safetensors")),
        )
        document = {
            "format": "dynfusion_ros gate",
            "format_version": GATE_FORMAT,
            "weights": path.with_suffix(".safetensors").name,
            "features": list(FEATURE_NAMES),
            "configurations": [c.text for c in self.configurations],
            "contexts": list(self.contexts),
            "layers": len(self.layers),
            "seen_sensor_sets": sorted(self.seen_sensor_sets),
            "blend": self.blend,
            "tie_margin": self.tie_margin,
            "hold_penalty": self.hold_penalty,
            "metadata": dict(self.metadata),
        }
        path.write_text(strict_json.dumps(document, indent=2) + "\n")
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
        if document.get("format_version") not in READABLE_GATE_FORMATS:
            raise GateModelError(
                path,
                f"format_version {document.get('format_version')!r}, this version reads "
                f"{GATE_FORMAT}; retrain with `dynfusion train gate`",
            )
        if document.get("features") != list(FEATURE_NAMES):
            raise GateModelError(
                path, "trained on other context features; retrain with `dynfusion train gate`"
            )
        try:
            configurations = tuple(Configuration.parse(t) for t in document["configurations"])
        except (KeyError, TypeError, ValueError) as error:
            raise GateModelError(path, f"bad configuration table: {error}") from None
        weights_path = path.with_name(document["weights"])
        try:
            arrays = load_file(str(weights_path))
            layers = [
                (arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"])
                for i in range(document["layers"])
            ]
            model = cls(
                configurations,
                tuple(document["contexts"]),
                arrays["mean"],
                arrays["scale"],
                layers,
                frozenset(document.get("seen_sensor_sets", [])),
                document.get("metadata", {}),
                arrays.get("dataset_quality"),
                float(document.get("blend", 0.0)),
                float(document.get("tie_margin", 0.0)),
                float(document.get("hold_penalty", DEFAULT_HOLD_PENALTY)),
            )
        except FileNotFoundError:
            raise GateModelError(weights_path, "gate weights not found") from None
        except (SafetensorError, OSError, KeyError) as error:
            raise GateModelError(weights_path, f"corrupt gate weights: {error}") from None
        except (TypeError, ValueError) as error:
            raise GateModelError(
                path, f"bad dataset quality, blend or hold penalty: {error}"
            ) from None
        if layers[-1][0].shape[0] != len(configurations) + len(model.contexts):
            raise GateModelError(weights_path, "output size does not match the configurations")
        if layers[0][0].shape[1] != len(FEATURE_NAMES):
            raise GateModelError(weights_path, "input size does not match the feature table")
        return model


def sensor_set(features: ContextFeatures) -> str:
    return "+".join(s.value for s in STEMS if features.available(s)) or "none"


def prior_quality(configuration: Configuration) -> float:
    """The fallback's worth of a configuration: see ``PRIOR_OPTION_QUALITY``."""
    missed = np.prod([1.0 - PRIOR_OPTION_QUALITY[name] for name in configuration.names])
    return float(1.0 - missed)


@dataclass(frozen=True)
class Decision:
    """What the gate chose for one frame and why. ``chosen``: one configuration, or the
    late-fusion baseline's several; empty when nothing can run."""

    chosen: tuple[Configuration, ...]
    utility: float  # predicted quality of the choice (NaN when not predicted)
    energy_j: float  # planned energy of the choice, overhead included
    option_utility: Mapping[str, float]  # predicted quality of each option alone
    context_label: str = ""
    context_scores: Mapping[str, float] = field(default_factory=dict)
    fallback: str = ""  # why the prior was used instead of the model, if it was
    over_budget: bool = False  # nothing available fits the budget: the cheapest ran
    allowed_j: float = float("inf")  # what the detector could spend: budget + savings - other

    @property
    def options(self) -> tuple[str, ...]:
        """Every option that runs (or ``tracks``), in ``CHOICE_NAMES`` order."""
        names = {name for c in self.chosen for name in c.names}
        return tuple(name for name in CHOICE_NAMES if name in names)


@dataclass
class EnergyAccount:
    """The budget as a mean over ``window_frames``: the savings, and the energy price.

    Each frame is credited its budget and charged what ran; the savings never exceed
    ``window_frames - 1`` budgets, so over any run of frames the spending is at most the
    budgets plus that much. The price (utility per budget of energy) moves every frame by
    ``PRICE_STEP * (wanted - budget) / budget``, ``wanted`` the energy of what the gate
    would run if savings were unlimited, and never below 0: a dual (sub)gradient ascent
    that settles where the gate's wishes average the budget. It starts at 0 with nothing
    saved, so a stream's first frames are chosen as under a per-frame cap."""

    window_frames: int = BUDGET_WINDOW_FRAMES
    savings_j: float = 0.0
    price: float = 0.0

    def __post_init__(self) -> None:
        if self.window_frames < 1:
            raise ValueError(
                f"the budget window must be at least 1 frame, got {self.window_frames}"
            )

    def available_j(self, budget_j: float) -> float:
        return budget_j + self.savings_j

    def charge(self, budget_j: float, spent_j: float) -> None:
        """Credit the frame's budget, charge what it spent; keep the savings in bounds."""
        cap = (self.window_frames - 1) * max(budget_j, 0.0)
        self.savings_j = float(np.clip(self.savings_j + budget_j - spent_j, 0.0, cap))

    def follow(self, budget_j: float, available_j: float) -> None:
        """Take the savings another chooser's account had for this frame (it saw every
        frame; this copy may not have)."""
        self.savings_j = max(0.0, available_j - budget_j)

    def steer(self, budget_j: float, wanted_j: float) -> None:
        if budget_j <= 0:  # no budget: nothing to steer towards
            return
        step = PRICE_STEP * (wanted_j - budget_j) / budget_j
        self.price = float(np.clip(self.price + step, 0.0, MAX_PRICE))


class Gate:
    """Chooses a configuration per frame under a policy and a budget, with hysteresis.

    ``hysteresis_frames``: a different configuration must look better by ``margin`` on
    this many frames in a row before the dynamic policy switches to it (1: at once). A
    current one that stops fitting (budget lowered, savings spent, sensor lost) is left
    at once. Reuse and tracks, being a few frames' saving after a detector run, are
    exempt: the dynamic policy alternates into and out of them freely.
    ``budget_window_frames``: the budget is a mean over this many frames
    (``EnergyAccount``; 1: every frame within it).
    """

    def __init__(
        self,
        profile: EnergyProfile,
        model: GateModel | None = None,
        *,
        hysteresis_frames: int = 2,
        margin: float = 0.01,
        budget_window_frames: int = BUDGET_WINDOW_FRAMES,
    ) -> None:
        if hysteresis_frames < 1:
            raise ValueError(f"hysteresis_frames must be at least 1, got {hysteresis_frames}")
        EnergyAccount(budget_window_frames)  # checks it
        profile.check_complete()
        self.profile, self.model = profile, model
        self.configurations = model.configurations if model else choices()
        self.energy_j = np.array([profile.run_energy_j([c]) for c in self.configurations])
        self.runs = np.array([[s in c.runs for s in STEMS] for c in self.configurations])
        self.reuses = np.array([[c.level(s) == REUSE for s in STEMS] for c in self.configurations])
        self.holds = np.array([c.tracks for c in self.configurations])
        self._tracks = self.index(TRACKS_CONFIGURATION)
        self._full_index = self.index(FULL_CONFIGURATION)
        self.stems = self.runs | self.reuses
        self.hold_penalty = model.hold_penalty if model else DEFAULT_HOLD_PENALTY
        self.singles = {
            c.names[0]: i for i, c in enumerate(self.configurations) if len(c.names) == 1
        }
        self.prior = np.array([prior_quality(c) for c in self.configurations])
        self.hysteresis_frames, self.margin = hysteresis_frames, margin
        self.budget_window_frames = budget_window_frames
        self.reset()

    def reset(self) -> None:
        self._current: int | None = None
        self._challenger: int | None = None
        self._wins = 0
        self._full = np.zeros(len(STEMS), dtype=bool)  # stems run at full on the last frame
        self._held: int | None = None  # frames since the detector last ran (None: never)
        self._source: int | None = None  # what it ran then: what tracks would predict
        self.reset_account()

    def reset_account(self) -> None:
        """Nothing saved, no price: a new stream, or a new budget (what was saved under
        the old one is not spent under it, so a budget lowered at run time holds at once)."""
        self.account = EnergyAccount(self.budget_window_frames)

    def index(self, configuration: Configuration) -> int | None:
        try:
            return self.configurations.index(configuration)
        except ValueError:
            return None

    @property
    def cheapest_energy_j(self) -> float:
        return float(self.energy_j.min())

    def full_energy_j(self) -> float:
        return self.profile.run_energy_j([FULL_CONFIGURATION])

    def _usable(self, features: ContextFeatures) -> np.ndarray:
        """Which configurations can run now: every stem they run has its sensor, every
        stem they reuse ran at full on the last frame; tracks, while the detector ran
        within ``MAX_HELD_FRAMES``."""
        usable = self._has_sensors(features) & ~(self.reuses & ~self._full).any(axis=1)
        return usable & ~(self.holds & (self._held is None or self._held >= MAX_HELD_FRAMES))

    def _has_sensors(self, features: ContextFeatures) -> np.ndarray:
        """Which configurations have the sensor of every stem they run."""
        available = np.array([features.available(s) for s in STEMS])
        return ~(self.runs & ~available).any(axis=1)

    def cheapest_usable_j(self, features: ContextFeatures) -> float:
        """The least a frame with these sensors can spend on detection, overhead included."""
        energies = self.energy_j[self._usable(features)]
        return float(energies.min()) if energies.size else self.profile.overhead_total_j

    def _predict(self, features: ContextFeatures) -> tuple[np.ndarray, dict[str, float], str]:
        """Predicted utilities (tracks as of the full configuration one frame on; see
        ``_tracked``), context probabilities, and why the prior stood in, if it did."""
        if self.model is None:
            return self.prior, {}, "no gate model loaded"
        if sensor_set(features) not in self.model.seen_sensor_sets:
            return self.prior, {}, f"sensor set {sensor_set(features)} not seen in training"
        quality, odds = self.model.utility(features.values)
        return quality, dict(zip(self.model.contexts, map(float, odds), strict=True)), ""

    def _tracks_worth(self, utility: np.ndarray, source, frames_on) -> np.ndarray:
        """What tracks are worth ``frames_on`` frames after ``source`` (configuration
        indices) ran: tracks keep the share of their source's worth that tracks of the
        full configuration keep of its worth, less ``hold_penalty`` per frame past one."""
        full = float(utility[self._full_index]) if self._full_index is not None else 1.0
        share = min(max(float(utility[self._tracks]) / max(full, 1e-6), 0.0), 1.0)
        return share * utility[source] - self.hold_penalty * (np.asarray(frames_on) - 1)

    def _tracked(self, utility: np.ndarray) -> np.ndarray:
        """The utilities with that of tracks as they stand on this frame."""
        if self._tracks is None or self._source is None:
            return utility
        tracked = utility.copy()
        tracked[self._tracks] = self._tracks_worth(utility, self._source, self._held + 1)
        return tracked

    def decide(
        self,
        features: ContextFeatures,
        policy: Policy,
        budget_j: float | None,
        true_quality: np.ndarray | None = None,
        other_j: float = 0.0,
    ) -> Decision:
        """The configuration for this frame. ``true_quality`` (per configuration, from
        ground truth) is required by, and only used by, the oracle policy. ``other_j``:
        what the frame spends besides the detector (the odometry corrections), from the
        same budget: one account holds the whole frame, so a dear correction now and then
        is paid from savings like a dear configuration, and does not jolt the price."""
        decision = self._decide(features, policy, budget_j, true_quality, other_j)
        self.note_run(decision.chosen, budget_j, other_j)
        return decision

    def note_run(
        self, chosen: tuple[Configuration, ...], budget_j: float | None = None, other_j: float = 0.0
    ) -> None:
        """What this frame runs, decided here or elsewhere (the fusion node adopts the
        context estimator's choice): the next frame may reuse what ran at full, and its
        energy and ``other_j`` are charged against ``budget_j``."""
        ran_full = {o.stem for c in chosen for o in c.options if o.level == FULL}
        self._full = np.array([s in ran_full for s in STEMS])
        detected = [c for c in chosen if c.detects]
        if detected:  # the late baseline's fused output stands in as the full one
            self._held = 0
            known = self.index(detected[0]) if len(detected) == 1 else None
            self._source = known if known is not None else self._full_index
        elif self._held is not None:
            self._held += 1
        if budget_j is not None:
            spent = self.profile.run_energy_j(chosen) if chosen else self.profile.overhead_total_j
            self.account.charge(budget_j, spent + other_j)

    def available_j(self, budget_j: float | None) -> float:
        """The most this frame may spend, all told: its budget and the savings."""
        return np.inf if budget_j is None else self.account.available_j(budget_j)

    def _decide(self, features, policy, budget_j, true_quality, other_j) -> Decision:
        untracked, contexts, fallback = self._predict(features)
        quality = self._tracked(untracked)
        usable = self._usable(features)
        singles = {name: float(quality[i]) for name, i in self.singles.items()}
        label = max(contexts, key=contexts.get) if contexts else ""
        common = {"option_utility": singles, "context_label": label, "context_scores": contexts}
        allowed = self.available_j(budget_j) - other_j  # what the detector may spend
        common["allowed_j"] = allowed
        if policy.kind in ("full", "static", "late"):
            chosen = self._fixed(policy, features)
            index = self.index(chosen[0]) if len(chosen) == 1 else None
            utility = float(quality[index]) if index is not None else float("nan")
            energy = self.profile.run_energy_j(chosen)
            over = energy > allowed * (1 + ENERGY_TOLERANCE)
            return Decision(chosen, utility, energy, fallback=fallback, over_budget=over, **common)
        if policy.kind == "oracle":
            if true_quality is None:
                raise ValueError("the oracle policy needs ground truth (offline evaluation only)")
            quality = untracked = true_quality
            fallback = ""
        if not usable.any():
            self._current = None
            return Decision(
                (), float("nan"), self.profile.overhead_total_j, fallback=fallback, **common
            )
        limit = allowed * (1 + ENERGY_TOLERANCE)
        fits = usable & (self.energy_j <= limit)
        over = not fits.any()
        if over:  # nothing fits: the cheapest usable configuration, reported as a violation
            candidates = np.flatnonzero(usable)
            best = int(candidates[np.argmin(self.energy_j[candidates])])
            value = quality
        else:
            fitted = policy.kind == "dynamic" and self.model is not None and not fallback
            margin = self.model.tie_margin if fitted else 0.0
            value = self._value(quality, untracked, budget_j)
            best = self._best(value, fits, margin)
            if budget_j is not None and self.budget_window_frames > 1:
                wanted = self._best(value, usable, margin)
                self.account.steer(budget_j, float(self.energy_j[wanted]) + other_j)
        if policy.kind == "dynamic":
            best = self._hold(best, value, fits if not over else usable)
        return Decision(
            (self.configurations[best],),
            float(quality[best]),
            float(self.energy_j[best]),
            fallback=fallback,
            over_budget=over,
            **common,
        )

    def _value(
        self, quality: np.ndarray, untracked: np.ndarray, budget_j: float | None
    ) -> np.ndarray:
        """What the choice maximises: the utility, less the energy at the account's
        price (when frames can save), each detecting configuration taken with the tracks
        that may follow it (``_with_tracks``; ``untracked``: the utilities with that of
        tracks as of the full configuration, whatever the tracks now stand on)."""
        if budget_j is None or budget_j <= 0:
            return quality
        priced = quality
        if self.budget_window_frames > 1:
            priced = quality - self.account.price * self.energy_j / budget_j
        return self._with_tracks(untracked, priced, quality)

    def _with_tracks(
        self, untracked: np.ndarray, priced: np.ndarray, quality: np.ndarray
    ) -> np.ndarray:
        """A detector run and the frames that then hold its detections as tracks form a
        cycle, and under a mean budget what counts is a cycle's value per frame. So a
        configuration that detects is worth the best mean value, at the price, of itself
        followed by 0 to ``MAX_HELD_FRAMES`` frames of tracks; tracks keep their own value,
        and so go on while worth at least the best cycle (the renewal rule of an average
        reward). Scored one frame at a time instead, a dear run looks worse than it is
        (its tracks are cheap and good), and the gate spent tight budgets on reuse."""
        if self._tracks is None:
            return priced
        detecting = np.flatnonzero(~self.holds)
        tracks_price = priced[self._tracks] - quality[self._tracks]
        total = priced[detecting].copy()
        best = total.copy()
        for frames_on in range(1, MAX_HELD_FRAMES + 1):
            total += self._tracks_worth(untracked, detecting, frames_on) + tracks_price
            best = np.maximum(best, total / (frames_on + 1))
        value = priced.copy()
        value[detecting] = best
        return value

    def _best(self, value: np.ndarray, allowed: np.ndarray, margin: float) -> int:
        """The highest value allowed; values within ``margin`` of it are a tie that the
        value cannot resolve, and the dearer one gives better-founded scores across
        frames, so the budget is spent on it."""
        candidates = np.flatnonzero(allowed)
        near = candidates[value[candidates] >= value[candidates].max() - margin]
        order = np.lexsort((-value[near], -self.energy_j[near]))
        return int(near[order[0]])

    def _fixed(self, policy: Policy, features: ContextFeatures) -> tuple[Configuration, ...]:
        """A fixed policy's configurations, less the stems whose sensor is not there."""
        present = {s for s in STEMS if features.available(s)}
        if policy.kind == "late":
            return tuple(c for c in SINGLE_STEMS if c.stems[0] in present)
        wanted = FULL_CONFIGURATION if policy.kind == "full" else policy.configuration
        kept = Configuration(tuple(o for o in wanted.options if o.stem in present))
        return (kept,) if kept else ()

    def _hold(self, best: int, quality: np.ndarray, allowed: np.ndarray) -> int:
        """Hysteresis: keep the current configuration unless ``best`` keeps beating it.
        Stepping into or out of reuse or tracks is not a switch: they alternate with the
        runs they follow."""
        current = self._current
        if current is None or not allowed[current] or self.hysteresis_frames == 1:
            self._current, self._challenger, self._wins = best, None, 0
            return best
        if (
            self.reuses[best].any()
            or self.reuses[current].any()
            or self.holds[[best, current]].any()
        ):
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
