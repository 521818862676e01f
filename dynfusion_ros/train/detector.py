"""Training the fused detector over every configuration it may be asked to run.

Every step, every frame of the batch gets its own random configuration (``plan_batch``):
each stem runs at one of its levels, reuses an earlier frame's features warped by the
true motion (with noise, since a filter's motion is not exact) or is off, and a share of
the frames runs everything at the full level. So every configuration the gate can pick is trained,
and the one head learns to score whatever it is given on one scale. A stem without
data in a frame is off there; a frame with no stem at all is left out of the loss.

Each stem also has a small probe head of its own, used only here (deep supervision):
wherever a stem runs, its features alone must find the objects. Without it the camera
stem, outweighed by the lidar in every mixture it joins, learns from the few frames it
runs alone and scores nothing there (validation mAP 0.00 to 0.03 over two runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dynfusion_ros.core.detector.boxes import decode
from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.head import CenterHead
from dynfusion_ros.core.detector.levels import REUSE, STEMS, Configuration
from dynfusion_ros.core.detector.network import LEVELS, OFF, STEM_NAMES, FusedDetector
from dynfusion_ros.core.detector.reuse import relative_motion, warp
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_detections
from dynfusion_ros.train.dataset import BranchDataset
from dynfusion_ros.train.losses import focal_loss, regression_loss

STEM_COLUMN = {stem.value: column for column, stem in enumerate(STEMS)}
VALIDATION_REUSE_BACK = 1  # validation reuses the previous frame's features, as the gate does
PROBE_WIDTH = 16  # hidden channels of a stem's probe head: cheap, it only carries gradients


@dataclass(frozen=True)
class DetectorTrainSettings:
    steps: int = 6000
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    regression_weight: float = 1.0
    probe_weight: float = 0.5  # the stems' probe losses, each against the fused loss
    full_share: float = 0.2  # frames that run every stem with data at its full level
    reuse_probability: float = 0.25  # a contributing stem reuses an earlier frame's features
    reuse_frames_back: int = 3  # reused features come from 1 to this many frames back
    motion_noise_m: float = 0.05  # standard deviation added to the true motion, per axis
    motion_noise_rad: float = 0.005
    validate_every: int = 2000  # steps; and once at the end
    seed: int = 0


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)  # one per step
    validation: list[dict[str, float]] = field(default_factory=list)  # config -> mAP
    validation_steps: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class StemPlan:
    """One stem's part of a batch: per frame, the level index (``OFF``: not at all) and,
    for reuse, the frame reused, the level it ran at, the age and the motion since."""

    level: np.ndarray
    earlier: np.ndarray
    earlier_level: np.ndarray
    age_s: np.ndarray
    motion: np.ndarray

    @classmethod
    def off(cls, size: int) -> StemPlan:
        return cls(
            np.full(size, OFF),
            np.full(size, -1),
            np.zeros(size, dtype=np.int64),
            np.zeros(size, dtype=np.float32),
            np.zeros((size, 3), dtype=np.float32),
        )


class StemProbes(nn.Module):
    """One small detection head per stem on its own features, for training only."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        classes = len(config.classes)
        self.heads = nn.ModuleDict(
            {
                stem: CenterHead(config.stem_channels[stem], PROBE_WIDTH, classes)
                for stem in STEM_NAMES
            }
        )

    def forward(self, stem: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads[stem](features)


def stem_inputs(data: BranchDataset, stem: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
    if stem == "camera":
        lifts = np.stack([data.lifts[i] for i in data.lift_index[rows]])
        return {
            "camera": torch.from_numpy(data.camera[rows]),
            "camera_lift": torch.from_numpy(lifts),
        }
    return {stem: torch.from_numpy(getattr(data, stem)[rows].astype(np.float32))}


def _reuse_source(
    data: BranchDataset, frame: int, stem: str, frames_back: Sequence[int]
) -> tuple[int, float, np.ndarray] | None:
    """An earlier frame of the same bag with this stem's data and a known pose, the age of
    its features and the motion since, trying ``frames_back`` in order."""
    if np.isnan(data.pose[frame]).any():
        return None
    for back in frames_back:
        earlier = data.earlier(frame, back)
        if earlier is None or not data.available[earlier, STEM_COLUMN[stem]]:
            continue
        if np.isnan(data.pose[earlier]).any():
            continue
        age = (int(data.stamp_ns[frame]) - int(data.stamp_ns[earlier])) * 1e-9
        if age > 0:
            return earlier, age, relative_motion(data.pose[earlier], data.pose[frame])
    return None


def plan_batch(
    data: BranchDataset,
    chosen: np.ndarray,
    rng: np.random.Generator,
    settings: DetectorTrainSettings,
) -> dict[str, StemPlan]:
    """A random configuration for every frame of the batch: a share runs every stem at
    its full level; the rest draw how many stems contribute (one, two or three, equally
    often, so a stem alone trains as often as any pair) and which, each at a running
    level or, when an earlier frame allows, reused."""
    plans = {stem: StemPlan.off(len(chosen)) for stem in STEM_NAMES}
    for row, frame in enumerate(chosen):
        full = rng.random() < settings.full_share
        count = len(STEM_NAMES) if full else int(rng.integers(1, len(STEM_NAMES) + 1))
        for stem in rng.permutation(STEM_NAMES)[:count]:
            plan, levels = plans[stem], LEVELS[stem]
            running = [i for i, level in enumerate(levels) if level != REUSE]
            source = None
            if not full and rng.random() < settings.reuse_probability:
                backs = rng.permutation(np.arange(1, settings.reuse_frames_back + 1))
                source = _reuse_source(data, frame, stem, backs)
            if source is not None:
                plan.level[row] = levels.index(REUSE)
                plan.earlier[row], plan.age_s[row], motion = source
                plan.earlier_level[row] = rng.choice(running)
                noise = rng.normal(0.0, 1.0, 3) * [
                    settings.motion_noise_m,
                    settings.motion_noise_m,
                    settings.motion_noise_rad,
                ]
                plan.motion[row] = motion + noise
            elif data.available[frame, STEM_COLUMN[stem]]:
                plan.level[row] = 0 if full else rng.choice(running)
    return plans


def stem_features(
    network: FusedDetector, data: BranchDataset, chosen: np.ndarray, stem: str, plan: StemPlan
) -> torch.Tensor | None:
    """The stem's features for every frame of the batch (zeros where it is off), each
    level's frames in one call; reused features are computed without gradients, as at
    run time they were computed on an earlier frame."""
    reuse = LEVELS[stem].index(REUSE)
    if (plan.level == OFF).all():
        return None
    out: torch.Tensor | None = None
    for index, level in enumerate(LEVELS[stem]):
        if level == REUSE:
            continue
        rows = np.flatnonzero(plan.level == index)
        reused = np.flatnonzero((plan.level == reuse) & (plan.earlier_level == index))
        parts = []
        if rows.size:
            parts.append((rows, network.stem(stem, stem_inputs(data, stem, chosen[rows]), level)))
        if reused.size:
            with torch.no_grad():
                old = network.stem(stem, stem_inputs(data, stem, plan.earlier[reused]), level)
            motion = torch.from_numpy(plan.motion[reused])
            parts.append((reused, warp(old, motion, network.config.grid)))
        for where, values in parts:
            if out is None:
                out = values.new_zeros((len(chosen), *values.shape[1:]))
            out = out.index_copy(0, torch.from_numpy(where), values)
    return out


def plan_features(
    network: FusedDetector, data: BranchDataset, chosen: np.ndarray, plans: Mapping[str, StemPlan]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Features, level indices and ages of every stem that contributes to any frame."""
    features, levels, ages = {}, {}, {}
    for stem, plan in plans.items():
        values = stem_features(network, data, chosen, stem, plan)
        if values is None:
            continue
        features[stem] = values
        levels[stem] = torch.from_numpy(plan.level)
        ages[stem] = torch.from_numpy(plan.age_s)
    return features, levels, ages


def contributed(plans: Mapping[str, StemPlan]) -> np.ndarray:
    """Per frame of the batch: did any stem contribute?"""
    return np.any([plan.level != OFF for plan in plans.values()], axis=0)


def forward_plan(
    network: FusedDetector, data: BranchDataset, chosen: np.ndarray, plans: Mapping[str, StemPlan]
):
    """Heatmap and boxes for the batch under its plan, and which frames had any stem."""
    features, levels, ages = plan_features(network, data, chosen, plans)
    if not features:
        return None, contributed(plans)
    return network.detect(features, levels, ages), contributed(plans)


def detector_loss(outputs, data: BranchDataset, chosen: np.ndarray, usable: np.ndarray, settings):
    """Focal plus weighted box loss of heatmap and boxes, over the ``usable`` frames."""
    logits, boxes = outputs
    weight = torch.from_numpy(usable.astype(np.float32))
    heatmap = torch.from_numpy(data.heatmap[chosen].astype(np.float32))
    focal, positives = focal_loss(logits, heatmap)
    l1, objects = regression_loss(
        boxes,
        torch.from_numpy(data.index[chosen]),
        torch.from_numpy(data.mask[chosen].astype(np.float32)),
        torch.from_numpy(data.regression[chosen]),
    )
    loss = (focal * weight).sum() / torch.clamp((positives * weight).sum(), min=1.0)
    return loss + settings.regression_weight * (l1 * weight).sum() / torch.clamp(
        (objects * weight).sum(), min=1.0
    )


def probe_loss(
    probes: StemProbes,
    features: Mapping[str, torch.Tensor],
    plans: Mapping[str, StemPlan],
    data: BranchDataset,
    chosen: np.ndarray,
    *,
    settings: DetectorTrainSettings,
) -> torch.Tensor:
    """Each stem's probe on the frames where that stem ran (reused maps carry no gradient
    into the stem, so they are left out)."""
    total = torch.zeros(())
    for stem, values in features.items():
        level = plans[stem].level
        ran = (level != OFF) & (level != LEVELS[stem].index(REUSE))
        if ran.any():
            total = total + detector_loss(probes(stem, values), data, chosen, ran, settings)
    return total


def fixed_plan(data: BranchDataset, chosen: np.ndarray, configuration: Configuration):
    """The plan that runs one configuration on every frame it can: a stem without data
    is off; reuse takes the frame ``VALIDATION_REUSE_BACK`` back, at the full level."""
    plans = {stem: StemPlan.off(len(chosen)) for stem in STEM_NAMES}
    for stem_type in configuration.stems:
        stem, level = stem_type.value, configuration.level(stem_type)
        plan = plans[stem]
        for row, frame in enumerate(chosen):
            if level != REUSE:
                if data.available[frame, STEM_COLUMN[stem]]:
                    plan.level[row] = LEVELS[stem].index(level)
                continue
            source = _reuse_source(data, frame, stem, (VALIDATION_REUSE_BACK,))
            if source is not None:
                plan.level[row] = LEVELS[stem].index(REUSE)
                plan.earlier[row], plan.age_s[row], plan.motion[row] = source
    return plans


@torch.inference_mode()
def validate(
    network: FusedDetector,
    data: BranchDataset,
    configurations: Sequence[Configuration],
    batch_size: int = 16,
) -> dict[str, float]:
    """BEV mAP of each configuration over the frames where it had any stem."""
    network.eval()
    scores = {}
    for configuration in configurations:
        frames: list[ScoredFrame] = []
        for start in range(0, len(data), batch_size):
            chosen = np.arange(start, min(start + batch_size, len(data)))
            outputs, present = forward_plan(
                network, data, chosen, fixed_plan(data, chosen, configuration)
            )
            if outputs is None:
                continue
            for row, frame in enumerate(chosen):
                if present[row]:
                    truth = data.scored[frame]
                    found = decode(outputs[0][row], outputs[1][row], network.config)
                    frames.append(ScoredFrame(found, truth.truth, truth.context))
        scores[configuration.text] = (
            evaluate_detections(frames, network.config.grid).map if frames else float("nan")
        )
    return scores


def train_detector(
    network: FusedDetector,
    data: BranchDataset,
    settings: DetectorTrainSettings,
    *,
    validation: BranchDataset | None = None,
    configurations: Sequence[Configuration] = (),
    progress: bool = True,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainLog:
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    probes = StemProbes(network.config)
    parameters = [*network.parameters(), *probes.parameters()]
    optimiser = torch.optim.AdamW(
        parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.1
    )
    log, started = TrainLog(), time.perf_counter()
    order = rng.permutation(len(data))
    position = 0
    bar = tqdm(range(settings.steps), desc="training", unit="step", disable=not progress)
    for step in bar:
        network.train()
        if position + settings.batch_size > len(order):
            order, position = rng.permutation(len(data)), 0
        chosen = np.sort(order[position : position + settings.batch_size])
        position += settings.batch_size
        plans = plan_batch(data, chosen, rng, settings)
        features, levels, ages = plan_features(network, data, chosen, plans)
        if not features:
            continue
        outputs = network.detect(features, levels, ages)
        loss = detector_loss(outputs, data, chosen, contributed(plans), settings)
        loss = loss + settings.probe_weight * probe_loss(
            probes, features, plans, data, chosen, settings=settings
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        optimiser.step()
        schedule.step()
        log.losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(log.losses[-20:]):.3f}")
        due = step + 1 == settings.steps or (step + 1) % settings.validate_every == 0
        if due and validation is not None and len(validation) and configurations:
            scores = validate(network, validation, configurations, settings.batch_size)
            log.validation.append(scores)
            log.validation_steps.append(step + 1)
            if on_validation is not None:
                on_validation(step + 1, scores)
    log.seconds = time.perf_counter() - started
    network.eval()
    return log
