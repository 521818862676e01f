"""Every configuration of the fused detector on every frame of labelled bags, scored per
context: the model card's table, and which single sensor is best in each context.

Runs through ``DetectorRunner`` (the inference API the pipeline uses), so the numbers
are those of the shipped code path, not of the training loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros.core.detector.levels import FULL_CONFIGURATION, Configuration
from dynfusion_ros.core.detector.runner import DetectorRunner
from dynfusion_ros.core.fusion import fuse
from dynfusion_ros.eval.detection_metrics import (
    DetectionMetrics,
    ScoredFrame,
    classes_left_out,
    evaluate_per_context,
)
from dynfusion_ros.eval.trajectory import TruePoses
from dynfusion_ros.ros.bag_frames import (
    LabelledFrame,
    LostFrame,
    bag_duration_frames,
    read_frames,
)

LATE_FUSED = "late: camera, lidar, radar (wbf)"
SINGLE = ("camera", "lidar", "radar")


@dataclass
class DetectorReport:
    metrics: dict[str, dict[str, DetectionMetrics]]  # configuration -> context -> metrics
    frames: dict[str, int]  # context -> frames
    option_ms: dict[str, float]  # median per option, on the frames run in full
    head_ms: float  # median of the fusion and head

    @property
    def contexts(self) -> list[str]:
        return [c for c in self.frames if c != "all"] + ["all"]

    def best_single(self) -> dict[str, str]:
        """Per context, the single-sensor configuration with the highest mAP."""
        best = {}
        for context in self.contexts:
            scores = {b: self.metrics[b][context].map for b in SINGLE if context in self.metrics[b]}
            scores = {b: v for b, v in scores.items() if np.isfinite(v)}
            if scores:
                best[context] = max(scores, key=scores.get)
        return best

    def markdown(self) -> str:
        """nuScenes mAP per configuration and context, and the old all-points figure."""
        contexts = self.contexts
        lines = [
            "| configuration | " + " | ".join(contexts) + " | all, old rule |",
            "|---|" + "---:|" * (len(contexts) + 1),
        ]
        for name, by_context in self.metrics.items():
            values = [by_context[c].map if c in by_context else float("nan") for c in contexts]
            values.append(by_context["all"].map_all_points)
            cells = ["—" if not np.isfinite(v) else f"{100 * v:.1f}" for v in values]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        frames = [str(self.frames[c]) for c in contexts]
        lines.append("| *frames* | " + " | ".join(frames) + f" | {self.frames['all']} |")
        first = next(iter(self.metrics.values()))
        note = classes_left_out({c: m.classes_without_truth for c, m in first.items()})
        return "\n".join(lines + ([f"\n{note}"] if note else []))

    def class_markdown(self) -> str:
        """All frames: AP per class (mean over thresholds) and per threshold (mean over
        classes), the TP errors at 2 m and NDS-3."""
        first = next(iter(self.metrics.values()))["all"]
        classes = list(first.ap)
        thresholds = list(next(iter(first.ap.values())))
        header = [*classes, *(f"@{t:g} m" for t in thresholds), "ATE m", "ASE", "AOE rad", "NDS-3"]
        lines = ["| configuration | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        for name, by_context in self.metrics.items():
            metrics = by_context["all"]
            values = [metrics.ap_per_class[c] for c in classes]
            values += [float(np.nanmean([metrics.ap[c][t] for c in classes])) for t in thresholds]
            cells = [f"{100 * v:.1f}" for v in values]
            cells += [f"{v:.3f}" for v in metrics.mean_tp_errors.values()]
            cells.append(f"{100 * metrics.nds3:.1f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        counts = ", ".join(f"{c} {n}" for c, n in first.truth_count.items())
        lines.append(f"\nGround-truth boxes that count (on the grid, within range): {counts}.")
        return "\n".join(lines)


def situation(labelled: LabelledFrame | LostFrame) -> str:
    """The column a frame is scored under: its sensor fault when one is active (a blind
    sensor matters more than the weather), else its context."""
    return labelled.faults[0] if labelled.faults else labelled.context


def score_detector(
    runner: DetectorRunner,
    bags: Sequence[Path],
    configurations: Sequence[Configuration],
    *,
    every: int = 1,
    progress: bool = True,
    values: dict | None = None,
) -> DetectorReport:
    """Every configuration of the fused detector on every ``every``-th frame, and the
    late fusion of the single-sensor configurations (HydraFusion's baseline). Reuse reads
    the previous frame's full-level features, moved by the true ego motion: every frame
    in between runs the full configuration to keep them fresh."""
    scored: dict[str, list[ScoredFrame]] = defaultdict(list)
    option_ms, head_ms = defaultdict(list), []
    frames: dict[str, int] = defaultdict(int)
    singles = [Configuration.parse(name) for name in SINGLE]
    for bag in bags:
        poses = TruePoses(Path(bag))
        runner.reset()
        bar = tqdm(
            read_frames(Path(bag), values=values),
            total=bag_duration_frames(Path(bag), values),
            desc=Path(bag).name,
            unit="frame",
            disable=not progress,
            leave=False,
        )
        for number, labelled in enumerate(bar):
            pose = poses.known(labelled.frame.stamp_ns)
            if number % every or not labelled.scored:
                outputs = runner.run(labelled.frame, FULL_CONFIGURATION, pose)
                for key, value in outputs.option_ms.items():
                    option_ms[key].append(value)
                head_ms.append(outputs.head_ms)
                continue
            column = situation(labelled)
            frames[column] += 1
            frames["all"] += 1
            found, _ = runner.run_every(labelled.frame, [*configurations, *singles], pose)
            for configuration in configurations:
                # a configuration that cannot run detects nothing: its misses count
                detections = found.get(configuration.text, [])
                scored[configuration.text].append(ScoredFrame(detections, labelled.truth, column))
            late = fuse({c.text: found[c.text] for c in singles if c.text in found})
            scored[LATE_FUSED].append(ScoredFrame(late, labelled.truth, column))
    grid = runner.config.grid
    return DetectorReport(
        {name: evaluate_per_context(frames_, grid) for name, frames_ in scored.items()},
        dict(frames),
        {k: float(np.median(v)) for k, v in option_ms.items()},
        float(np.median(head_ms)) if head_ms else float("nan"),
    )
