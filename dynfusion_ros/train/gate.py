"""Fitting the gate's quality predictor on a detection record (``eval/records.py``).

Targets are the true per-frame quality of every configuration; the network learns
them from context features alone (cross-entropy against the soft targets, so outputs
stay in 0..1), and the context label beside them. What matters downstream is not the
loss but the *regret*: how much true quality the choice made from predictions loses
against the best choice, at a given budget. Both are reported on held-out frames.

Per-frame quality is not what the dataset metric rewards (``GateModel.utility``), so the
model also keeps every configuration's dataset mAP per context on the training frames,
and the share of it in the utility (the blend), the margin within which utilities tie and
how far each context's figures are drawn towards the overall ones (a context seen on a
few hundred frames ranks near-equal configurations by noise) are chosen by replaying the
dynamic policy on the held-out drives and scoring it as the benchmark does.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dynfusion_ros.core.context import ContextFeatures
from dynfusion_ros.core.detector.levels import FULL_CONFIGURATION, STEMS, Configuration
from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.core.gate import Gate, GateModel, Policy, sensor_set, static_configurations
from dynfusion_ros.core.types import SensorFrame
from dynfusion_ros.eval.detection_metrics import evaluate_detections
from dynfusion_ros.eval.records import (
    DetectionRecord,
    RecordedRunner,
    RecordFrames,
    without_sensor,
)

BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the utility's share of dataset mAP, tried in turn
TIE_MARGINS = (0.0, 0.01, 0.02)  # with each of these
# and each of these: a context's dataset mAP is drawn towards the configuration's mAP over
# every context as if that had this many frames more (about 400 frames per context here)
SHRINK_FRAMES = (0, 400, 4000)
TUNING_SHARES = (0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)  # budgets (of full) the blend is chosen at


@dataclass(frozen=True)
class GateSettings:
    hidden: int = 64
    steps: int = 3000
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    context_weight: float = 0.3  # share of the context-label loss
    seed: int = 0


@dataclass
class GateReport:
    train_frames: int
    val_frames: int
    seconds: float
    val_mae: float  # mean absolute error of predicted quality, every configuration
    regret: dict[str, float] = field(default_factory=dict)  # budget share -> mean regret
    context_accuracy: float = float("nan")
    blend: float = 0.0
    tie_margin: float = 0.0
    shrink_frames: int = 0
    # validation drives' nuScenes mAP of the dynamic policy, "blend/tie margin/shrink" -> budget
    # share -> mAP, and of the best static configuration that fits each share
    blend_map: dict[str, dict[str, float]] = field(default_factory=dict)
    best_static_map: dict[str, float] = field(default_factory=dict)
    hold_penalty: float = 0.0  # quality tracks lose per frame beyond the first


def _sensor_sets(features: np.ndarray) -> frozenset[str]:
    return frozenset(sensor_set(ContextFeatures(0, row)) for row in features)


def regret(
    record: DetectionRecord,
    frames: np.ndarray,
    predicted: np.ndarray,
    energy: np.ndarray,
    budget_j: float,
) -> float:
    """Mean true quality lost by choosing on predictions rather than on the truth."""
    allowed = record.ran[frames] & (energy <= budget_j)[None, :]
    truth = np.where(allowed, record.quality[frames], -np.inf)
    guess = np.where(allowed, predicted, -np.inf)
    has = allowed.any(axis=1)
    if not has.any():
        return float("nan")
    truth, guess = truth[has], guess[has]
    chosen = truth[np.arange(len(truth)), guess.argmax(axis=1)]
    return float(np.mean(truth.max(axis=1) - chosen))


def split_frames(
    record: DetectionRecord, val_bags: set[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation frame indices: whole bags are held out (default: every
    fifth), so validation frames come from drives the fit never saw."""
    bags = sorted(set(record.bags.tolist()))
    val_bags = val_bags if val_bags is not None else set(bags[4::5])
    held = np.isin(record.bags, list(val_bags))
    if held.all() or len(bags) < 2:
        held = np.arange(len(record)) % 10 == 9
    return np.flatnonzero(~held), np.flatnonzero(held)


def with_failures(record: DetectionRecord, frames: np.ndarray) -> tuple[np.ndarray, ...]:
    """Features, qualities and situations of ``frames``, plus the same frames with each
    sensor failed in turn. Training drives rarely lose a sensor outright, yet the gate
    must choose well when one does; a configuration on a frame without sensor s does
    what it does without that stem, whose quality the record already holds."""
    features, quality = [record.features[frames]], [record.quality[frames]]
    index = {configuration: i for i, configuration in enumerate(record.configurations)}
    has_truth = np.isin(frames, record.truth[:, 0].astype(int))
    full = record.quality[frames, index[FULL_CONFIGURATION]]
    for sensor in STEMS:
        failed = without_sensor(record, sensor)
        features.append(failed.features[frames])
        remapped = np.empty_like(record.quality[frames])
        without = Configuration(tuple(o for o in FULL_CONFIGURATION.options if o.stem != sensor))
        for column, configuration in enumerate(record.configurations):
            left = Configuration(tuple(o for o in configuration.options if o.stem != sensor))
            if configuration.tracks:
                # tracks of what the detector finds without the sensor: they lose what the
                # full configuration loses without it
                kept = record.quality[frames, index[without]] / np.maximum(full, 1e-6)
                remapped[:, column] = record.quality[frames, column] * np.clip(kept, 0.0, 1.0)
            elif left:
                remapped[:, column] = record.quality[frames, index[left]]
            else:  # nothing left to run: no detections, perfect only where nothing is there
                remapped[:, column] = (~has_truth).astype(float)
        quality.append(remapped)
    situations = np.tile(record.situations[frames], len(STEMS) + 1)
    return np.concatenate(features), np.concatenate(quality), situations


def hold_penalty(record: DetectionRecord, frames: np.ndarray) -> float:
    """Quality tracks lose per frame beyond the first they predict over: the mean drop
    from one frame on to each further frame, per frame, on ``frames``."""
    held = record.held_quality[frames]
    drops = [(held[:, 0] - held[:, back]) / back for back in range(1, held.shape[1])]
    return float(np.clip(np.mean(drops), 0.0, 1.0)) if drops else 0.0


@dataclass(frozen=True)
class ContextQuality:
    """Every configuration's nuScenes mAP over some frames: per context (a context
    without the classes to score takes the overall figure), overall, and how many of
    the frames each context had."""

    by_context: np.ndarray  # (configurations, contexts)
    overall: np.ndarray  # (configurations,)
    frames: np.ndarray  # (contexts,)

    @classmethod
    def measure(
        cls, frames: RecordFrames, indices: np.ndarray, contexts: tuple[str, ...]
    ) -> ContextQuality:
        metrics = frames.configuration_metrics(indices)
        table = np.zeros((len(frames.record.configurations), len(contexts)))
        overall = np.zeros(len(frames.record.configurations))
        for row, configuration in enumerate(frames.record.configurations):
            by_context = metrics[configuration.text]
            overall[row] = np.nan_to_num(by_context["all"].map)
            for column, context in enumerate(contexts):
                value = by_context[context].map if context in by_context else overall[row]
                table[row, column] = value if np.isfinite(value) else overall[row]
        counts = Counter(frames.record.situations[indices].tolist())
        return cls(np.nan_to_num(table), overall, np.array([counts[c] for c in contexts]))

    def shrunk(self, shrink_frames: float) -> np.ndarray:
        """The per-context table, each context drawn towards the overall figure as if
        the overall had ``shrink_frames`` frames to its ``frames``: a context seen on a
        few hundred frames ranks near-equal configurations by noise, and the overall
        figure is the better guess of the difference between them."""
        weight = self.frames / np.maximum(self.frames + shrink_frames, 1e-9)
        return weight * self.by_context + (1.0 - weight) * self.overall[:, None]


def dynamic_map(frames: RecordFrames, indices: np.ndarray, gate: Gate, budget_j: float) -> float:
    """The dataset mAP of the dynamic policy replayed over ``indices`` (in order, one
    stream per bag), hysteresis, reuse and tracks as live."""
    record, scored, bag = frames.record, [], None
    runner = RecordedRunner(record, frames.frame_detections)
    for frame in indices:
        if record.bags[frame] != bag:
            gate.reset()
            runner.reset()
            bag = record.bags[frame]
        features = ContextFeatures(int(record.stamps[frame]), record.features[frame])
        chosen = gate.decide(features, Policy("dynamic"), budget_j).chosen
        placeholder = SensorFrame(stamp_ns=int(frame))
        found = [d for c in chosen for d in runner.run(placeholder, c).detections]
        if any(c.detects for c in chosen):
            runner.follow(placeholder, found)
        scored.append(frames.scored(frame, found))
    return evaluate_detections(scored).map


def choose_blend(
    model: GateModel,
    frames: RecordFrames,
    indices: np.ndarray,
    profile: EnergyProfile,
    quality: ContextQuality,
) -> tuple[dict[str, dict[str, float]], dict[str, float], int]:
    """Set the blend, tie margin and context shrinkage (the dataset quality drawn from
    ``quality``) whose dynamic policy scores the highest mAP on ``indices`` (drives the
    fit never saw), averaged over ``TUNING_SHARES``. Returns the table they were chosen
    from, the best static configuration's mAP at each share and the shrinkage chosen."""
    gate = Gate(profile, model)
    full_j = gate.full_energy_j()
    static = {
        c: evaluate_detections([frames.scored(f, frames.detections(f, c)) for f in indices]).map
        for c in static_configurations()
    }
    best_static = {
        f"{share:.0%}": max(
            (v for c, v in static.items() if gate.energy_j[gate.index(c)] <= share * full_j),
            default=float("nan"),
        )
        for share in TUNING_SHARES
    }
    table, mean = {}, {}
    for blend, margin, shrink in itertools.product(BLENDS, TIE_MARGINS, SHRINK_FRAMES):
        if not blend and shrink:  # without dataset mAP in the utility, shrinking is moot
            continue
        model.blend, model.tie_margin = blend, margin
        model.dataset_quality = quality.shrunk(shrink)
        row = {
            f"{share:.0%}": dynamic_map(frames, indices, gate, share * full_j)
            for share in TUNING_SHARES
        }
        table[f"{blend:g}/{margin:g}/{shrink}"] = row
        mean[blend, margin, shrink] = np.nanmean(list(row.values()))
    model.blend, model.tie_margin, shrink = max(mean, key=mean.get)
    model.dataset_quality = quality.shrunk(shrink)
    return table, best_static, shrink


def fit_gate(
    record: DetectionRecord,
    profile: EnergyProfile,
    settings: GateSettings | None = None,
    *,
    val_bags: set[str] | None = None,
) -> tuple[GateModel, GateReport]:
    """Train on the record's frames outside ``val_bags`` (default: every fifth bag); the
    blend is chosen on those bags."""
    settings = settings or GateSettings()
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    gate = Gate(profile)
    energy_j = np.array([gate.energy_j[gate.index(c)] for c in record.configurations])
    train, val = split_frames(record, val_bags)
    contexts = tuple(sorted(set(record.situations.tolist())))
    features = record.features
    mean = np.nanmean(features[train], axis=0)
    scale = np.nanstd(features[train], axis=0)
    mean, scale = np.nan_to_num(mean), np.where(np.nan_to_num(scale) > 1e-6, scale, 1.0)
    train_features, train_quality, train_situations = with_failures(record, train)
    inputs = torch.tensor(np.nan_to_num((train_features - mean) / scale), dtype=torch.float32)
    quality = torch.tensor(train_quality, dtype=torch.float32)
    labels = torch.tensor([contexts.index(s) for s in train_situations])
    selections = len(record.configurations)
    network = nn.Sequential(
        nn.Linear(features.shape[1], settings.hidden),
        nn.ReLU(),
        nn.Linear(settings.hidden, settings.hidden),
        nn.ReLU(),
        nn.Linear(settings.hidden, selections + len(contexts)),
    )
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    for step in range(settings.steps):
        batch = torch.randint(len(inputs), (256,))
        out = network(inputs[batch])
        loss = nn.functional.binary_cross_entropy_with_logits(
            out[:, :selections], quality[batch]
        ) + settings.context_weight * nn.functional.cross_entropy(
            out[:, selections:], labels[batch]
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        for group in optimiser.param_groups:  # cosine decay to a tenth
            group["lr"] = settings.learning_rate * (
                0.55 + 0.45 * np.cos(np.pi * (step + 1) / settings.steps)
            )
    layers = [
        (m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
        for m in network
        if isinstance(m, nn.Linear)
    ]
    frames = RecordFrames(record)
    quality = ContextQuality.measure(frames, train, contexts)
    model = GateModel(
        record.configurations,
        contexts,
        mean,
        scale,
        layers,
        _sensor_sets(train_features),
        dataset_quality=quality.shrunk(0),
        hold_penalty=hold_penalty(record, train),
    )
    blend_map, best_static, shrink = choose_blend(model, frames, val, profile, quality)
    predicted = np.array([model.predict(row)[0] for row in features[val]])
    odds = np.array([model.predict(row)[1] for row in features[val]])
    context_labels = np.array([contexts.index(s) for s in record.situations[val]])
    full_energy = float(energy_j[record.configurations.index(FULL_CONFIGURATION)])
    report = GateReport(
        len(train),
        len(val),
        time.perf_counter() - start,
        float(np.abs(predicted - record.quality[val]).mean()),
        {
            f"{share:.0%}": regret(record, val, predicted, energy_j, share * full_energy)
            for share in (0.3, 0.5, 0.75, 1.0)
        },
        float(np.mean(odds.argmax(axis=1) == context_labels)),
        model.blend,
        model.tie_margin,
        shrink,
        blend_map,
        best_static,
        model.hold_penalty,
    )
    return model, report
