"""Training the branch network: every stem and every head together, each head's loss
taken only on frames where all of its stems had data.

Losses are CenterNet's: a penalty-reduced focal loss on the class heatmaps and an L1 loss
on the box encoding at each object's centre cell. Validation decodes every branch on the
validation frames and reports its BEV mAP after each epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from dynfusion_ros.core.branches.network import BranchNetwork
from dynfusion_ros.core.branches.registry import STEMS
from dynfusion_ros.core.detector.boxes import decode
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_detections
from dynfusion_ros.train.dataset import BranchDataset
from dynfusion_ros.train.losses import focal_loss, regression_loss

STEM_COLUMN = {stem.value: column for column, stem in enumerate(STEMS)}


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 14
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    regression_weight: float = 1.0
    seed: int = 0
    max_steps: int | None = None  # stop early (tests)


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)  # one per step
    validation: list[dict[str, float]] = field(default_factory=list)  # branch -> mAP per epoch
    seconds: float = 0.0


def batch_inputs(data: BranchDataset, chosen: np.ndarray) -> dict[str, torch.Tensor]:
    lifts = np.stack([data.lifts[i] for i in data.lift_index[chosen]])
    return {
        "camera": torch.from_numpy(data.camera[chosen]),
        "camera_lift": torch.from_numpy(lifts),
        "lidar": torch.from_numpy(data.lidar[chosen].astype(np.float32)),
        "radar": torch.from_numpy(data.radar[chosen].astype(np.float32)),
    }


def branch_loss(
    outputs, data: BranchDataset, chosen: np.ndarray, network, settings
) -> torch.Tensor:
    heatmap = torch.from_numpy(data.heatmap[chosen].astype(np.float32))
    index = torch.from_numpy(data.index[chosen])
    mask = torch.from_numpy(data.mask[chosen].astype(np.float32))
    regression = torch.from_numpy(data.regression[chosen])
    total = torch.zeros(())
    for name, (logits, boxes) in outputs.items():
        columns = [STEM_COLUMN[stem] for stem in network.specs[name].stem_names]
        usable = torch.from_numpy(data.available[chosen][:, columns].all(axis=1).astype(np.float32))
        if usable.sum() == 0:
            continue
        focal, positives = focal_loss(logits, heatmap)
        l1, objects = regression_loss(boxes, index, mask, regression)
        total = total + (focal * usable).sum() / torch.clamp((positives * usable).sum(), min=1.0)
        total = total + settings.regression_weight * (l1 * usable).sum() / torch.clamp(
            (objects * usable).sum(), min=1.0
        )
    return total


@torch.inference_mode()
def validate(network: BranchNetwork, data: BranchDataset, batch_size: int = 16) -> dict[str, float]:
    """BEV mAP of every branch over the frames where it can run."""
    network.eval()
    predictions: dict[str, list[ScoredFrame]] = {name: [] for name in network.specs}
    for start in range(0, len(data), batch_size):
        chosen = np.arange(start, min(start + batch_size, len(data)))
        outputs = network(batch_inputs(data, chosen), network.specs)
        for name, (logits, boxes) in outputs.items():
            columns = [STEM_COLUMN[stem] for stem in network.specs[name].stem_names]
            for row, frame in enumerate(chosen):
                if data.available[frame, columns].all():
                    truth = data.scored[frame]
                    found = decode(logits[row], boxes[row], network.config)
                    predictions[name].append(ScoredFrame(found, truth.truth, truth.context))
    return {
        name: evaluate_detections(frames, network.config.grid).map if frames else float("nan")
        for name, frames in predictions.items()
    }


def train(
    network: BranchNetwork,
    data: BranchDataset,
    settings: TrainSettings,
    *,
    validation: BranchDataset | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainLog:
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    steps_per_epoch = max(1, len(data) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.learning_rate, total_steps=total_steps, pct_start=0.1
    )
    log, started, step = TrainLog(), time.perf_counter(), 0
    branch_names: Sequence[str] = list(network.specs)
    for epoch in range(settings.epochs):
        network.train()
        order = rng.permutation(len(data))
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{settings.epochs}",
            unit="batch",
            disable=not progress,
        )
        for batch in bar:
            if step >= total_steps:
                break
            chosen = np.sort(order[batch * settings.batch_size : (batch + 1) * settings.batch_size])
            outputs = network(batch_inputs(data, chosen), branch_names)
            loss = branch_loss(outputs, data, chosen, network, settings)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimiser.step()
            schedule.step()
            step += 1
            log.losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(log.losses[-20:]):.3f}")
        if validation is not None and len(validation):
            scores = validate(network, validation, settings.batch_size)
            log.validation.append(scores)
            if on_epoch is not None:
                on_epoch(epoch, scores)
        if step >= total_steps:
            break
    log.seconds = time.perf_counter() - started
    network.eval()
    return log
