"""Offline evaluation of the pipeline: replay labelled frames through
``DynamicFusionPipeline`` and summarise accuracy, energy, latency and branch usage.

The same summary serves ``dynfusion evaluate`` (a bag, the real network) and the
benchmark (recorded branch outputs replayed for many policies and budgets).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros.core.pipeline import DynamicFusionPipeline, FrameResult
from dynfusion_ros.core.types import Detection, EnergyRecord
from dynfusion_ros.eval.branch_report import situation
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_per_context
from dynfusion_ros.eval.records import BranchRecord, RecordedRunner
from dynfusion_ros.ros.bag_frames import bag_duration_frames, read_frames


@dataclass
class Evaluation:
    """The keys of ``dynfusion evaluate --json``. mAP values are 0..1."""

    frames: int
    policy: str
    budget_j: float | None
    map: float
    map_per_context: dict[str, float]
    ap_per_class: dict[str, float]
    energy_j_per_frame: float  # mean, by the energy profile
    energy_j_per_frame_p95: float
    measured_energy_j_per_frame: float  # mean, by the meter (NaN when replayed)
    meter: str
    latency_ms_p50: float
    latency_ms_p99: float
    branch_usage: dict[str, float]  # share of frames each branch ran
    budget_violations: int  # frames whose profile energy exceeded the budget
    fallback_frames: int  # frames the gate decided on its prior, not its model

    def to_json(self) -> str:
        def clean(value):
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return json.dumps(clean(asdict(self)), indent=2) + "\n"

    def table(self) -> str:
        budget = "none" if self.budget_j is None else f"{self.budget_j:.4g} J"
        rows = [
            ("frames", f"{self.frames}"),
            ("policy", self.policy),
            ("budget per frame", budget),
            ("mAP (BEV, 0.5/1/2/4 m)", f"{100 * self.map:.1f}"),
            *[(f"  mAP {c}", f"{100 * v:.1f}") for c, v in self.map_per_context.items()],
            *[(f"  AP {c}", f"{100 * v:.1f}") for c, v in self.ap_per_class.items()],
            ("energy per frame, mean (profile)", f"{self.energy_j_per_frame:.4f} J"),
            ("energy per frame, p95 (profile)", f"{self.energy_j_per_frame_p95:.4f} J"),
            (f"energy per frame, mean ({self.meter})", f"{self.measured_energy_j_per_frame:.4f} J"),
            ("latency p50 / p99", f"{self.latency_ms_p50:.1f} / {self.latency_ms_p99:.1f} ms"),
            (
                "branch usage",
                ", ".join(f"{b} {100 * u:.0f}%" for b, u in self.branch_usage.items()),
            ),
            ("budget violations", f"{self.budget_violations} frames"),
            ("gate fallbacks", f"{self.fallback_frames} frames"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@dataclass(frozen=True)
class FrameFacts:
    """What the summary needs of one frame besides its detections: from a FrameResult
    (offline) or from the topics the nodes published (a recording)."""

    chosen: tuple[str, ...]
    energy: EnergyRecord
    latency_ms: float
    fallback: bool  # the frame was decided without the gate's model (or, live, its selection)


def summarise(
    scored: Sequence[ScoredFrame],
    facts: Sequence[FrameFacts],
    *,
    policy: str,
    budget_j: float | None,
    branch_names: Sequence[str],
) -> Evaluation:
    metrics = evaluate_per_context(scored)
    energy = np.array([f.energy.total_energy_j for f in facts]) if facts else np.zeros(1)
    measured = np.array([f.energy.measured_energy_j for f in facts] or [np.nan])
    latency = np.array([f.latency_ms for f in facts] or [np.nan])
    usage = {n: float(np.mean([n in f.chosen for f in facts] or [0])) for n in branch_names}
    return Evaluation(
        frames=len(scored),
        policy=policy,
        budget_j=budget_j,
        map=metrics["all"].map,
        map_per_context={c: m.map for c, m in metrics.items() if c != "all"},
        ap_per_class=metrics["all"].ap_per_class,
        energy_j_per_frame=float(energy.mean()),
        energy_j_per_frame_p95=float(np.percentile(energy, 95)),
        measured_energy_j_per_frame=float(np.mean(measured)),
        meter=facts[0].energy.meter if facts else "profile",
        latency_ms_p50=float(np.percentile(latency, 50)),
        latency_ms_p99=float(np.percentile(latency, 99)),
        branch_usage=usage,
        budget_violations=int(sum(f.energy.over_budget for f in facts)),
        fallback_frames=int(sum(f.fallback for f in facts)),
    )


class Tally:
    """Collects frame results and their ground truth, then summarises."""

    def __init__(self, pipeline: DynamicFusionPipeline) -> None:
        self.pipeline = pipeline
        self.scored: list[ScoredFrame] = []
        self.facts: list[FrameFacts] = []

    def add(self, result: FrameResult, truth: list[Detection], column: str) -> None:
        decision = result.decision
        facts = FrameFacts(
            decision.chosen, result.energy, result.latency_ms, bool(decision.fallback)
        )
        self.facts.append(facts)
        self.scored.append(ScoredFrame(result.detections, truth, column))

    def summary(self) -> Evaluation:
        pipeline = self.pipeline
        return summarise(
            self.scored,
            self.facts,
            policy=pipeline.policy.text,
            budget_j=pipeline.budget_j,
            branch_names=pipeline.gate.branch_names,
        )


def evaluate_bags(
    pipeline: DynamicFusionPipeline, bags: Sequence[Path], *, progress: bool = True
) -> Evaluation:
    """Every frame of labelled bags through the pipeline, in order, one stream per bag."""
    tally = Tally(pipeline)
    for bag in bags:
        pipeline.reset()
        frames: Iterable = read_frames(Path(bag))
        frames = tqdm(
            frames,
            total=bag_duration_frames(Path(bag)),
            desc=Path(bag).name,
            unit="frame",
            disable=not progress,
            leave=False,
        )
        for labelled in frames:
            tally.add(
                pipeline.process(labelled.frame, labelled.truth),
                labelled.truth,
                situation(labelled) or "unlabelled",
            )
    return tally.summary()


def replay_record(pipeline: DynamicFusionPipeline, record: BranchRecord) -> Evaluation:
    """The record's frames through ``pipeline``, whose runner, context and selection
    scorer must read the record (see ``recorded_pipeline``)."""
    tally = Tally(pipeline)
    previous_bag = None
    runner = pipeline.runner
    for frame in runner.frames():
        bag = record.bags[frame.stamp_ns]
        if bag != previous_bag:
            pipeline.reset()
            previous_bag = bag
        truth = record.frame_truth(frame.stamp_ns)
        tally.add(pipeline.process(frame, truth), truth, str(record.situations[frame.stamp_ns]))
    return tally.summary()


def recorded_pipeline(record: BranchRecord, gate, **options) -> DynamicFusionPipeline:
    """A pipeline whose branches, context features and oracle scores come from a record."""
    runner = RecordedRunner(record)
    return DynamicFusionPipeline(
        runner, gate, context=runner.features, selection_scorer=runner.quality, **options
    )
