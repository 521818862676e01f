"""Offline evaluation of the pipeline: replay labelled frames through
``DynamicFusionPipeline`` and summarise accuracy, energy, latency and what ran.

The same summary serves ``dynfusion evaluate`` (a bag, the real network) and the
benchmark (recorded detector outputs replayed for many policies and budgets).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros import strict_json
from dynfusion_ros.core.detector.levels import CHOICE_NAMES
from dynfusion_ros.core.odometry.estimator import CORRECTIONS
from dynfusion_ros.core.pipeline import DynamicFusionPipeline, FrameResult
from dynfusion_ros.core.types import Detection, EnergyRecord
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_per_context
from dynfusion_ros.eval.detector_report import situation
from dynfusion_ros.eval.records import DetectionRecord, RecordedRunner
from dynfusion_ros.eval.trajectory import Trajectory, combined_errors, read_odometry
from dynfusion_ros.ros.bag_frames import LostFrame, bag_duration_frames, read_frames


@dataclass
class Evaluation:
    """The keys of ``dynfusion evaluate --json``. mAP values are 0..1; ``map`` and the
    TP errors are nuScenes' (``detection_metrics``)."""

    frames: int
    policy: str
    budget_j: float | None
    map: float
    map_per_context: dict[str, float]
    ap_per_class: dict[str, float]
    mate_m: float  # translation error of true positives at 2 m, mean over classes
    mase: float  # 1 - IoU of true positives aligned
    maoe_rad: float  # heading error of true positives
    nds3: float  # NDS over mAP and the three TP errors above (no velocity or attribute)
    tp_errors_per_class: dict[str, dict[str, float]]
    classes_without_truth: dict[str, list[str]]  # per context: left out of its mean
    map_all_points: float  # the figure printed before nuScenes' (one release, to compare)
    energy_j_per_frame: float  # mean, by the energy profile
    energy_j_per_frame_p95: float
    measured_energy_j_per_frame: float  # mean, by the meter (NaN when replayed)
    meter: str
    latency_ms_p50: float
    latency_ms_p99: float
    option_usage: dict[str, float]  # share of frames each detector option ran
    budget_violations: int  # frames whose profile energy exceeded the budget
    fallback_frames: int  # frames the gate decided on its prior, not its model
    frames_without_output: int = 0  # truth frames no frame was assembled for: no detections
    # odometry against /ground_truth/odometry (evo); NaN where there is none to score
    odometry_policy: str = "none"
    ate_rmse_m: float = float("nan")
    ate_pct: float = float("nan")  # ATE RMSE as a share of the distance driven, %
    rpe_trans_pct: float = float("nan")  # drift over 50 m of driving, %
    path_length_m: float = float("nan")
    odometry_usage: dict[str, float] = field(default_factory=dict)  # share of frames run

    def to_json(self) -> str:
        return strict_json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> str:
        budget = "none" if self.budget_j is None else f"{self.budget_j:.4g} J"
        rows = [
            ("frames", f"{self.frames}"),
            ("frames without output", f"{self.frames_without_output}"),
            ("policy", self.policy),
            ("budget per frame", budget),
            ("mAP (nuScenes, BEV 0.5/1/2/4 m)", self._map_text(self.map, "all")),
            *[(f"  mAP {c}", self._map_text(v, c)) for c, v in self.map_per_context.items()],
            *[(f"  AP {c}", f"{100 * v:.1f}") for c, v in self.ap_per_class.items()],
            (
                "TP errors at 2 m (ATE, ASE, AOE)",
                f"{self.mate_m:.3f} m, {self.mase:.3f}, {self.maoe_rad:.3f} rad",
            ),
            ("NDS-3 (mAP and the 3 TP errors)", f"{100 * self.nds3:.1f}"),
            ("mAP, old all-points rule", f"{100 * self.map_all_points:.1f}"),
            ("energy per frame, mean (profile)", f"{self.energy_j_per_frame:.4f} J"),
            ("energy per frame, p95 (profile)", f"{self.energy_j_per_frame_p95:.4f} J"),
            (f"energy per frame, mean ({self.meter})", f"{self.measured_energy_j_per_frame:.4f} J"),
            ("latency p50 / p99", f"{self.latency_ms_p50:.1f} / {self.latency_ms_p99:.1f} ms"),
            (
                "detector options run",
                ", ".join(f"{o} {100 * u:.0f}%" for o, u in self.option_usage.items() if u),
            ),
            ("budget violations", f"{self.budget_violations} frames"),
            ("gate fallbacks", f"{self.fallback_frames} frames"),
            (
                "odometry ATE RMSE",
                f"{self.ate_rmse_m:.2f} m, {self.ate_pct:.2f}% of {self.path_length_m:.0f} m",
            ),
            ("odometry drift (RPE, 50 m)", f"{self.rpe_trans_pct:.2f}%"),
            (
                f"odometry corrections run ({self.odometry_policy})",
                ", ".join(f"{c} {100 * u:.0f}%" for c, u in self.odometry_usage.items()),
            ),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def _map_text(self, value: float, context: str) -> str:
        """An mAP, naming the classes its mean leaves out (no ground truth there)."""
        text = "—" if not np.isfinite(value) else f"{100 * value:.1f}"
        missing = self.classes_without_truth.get(context)
        return f"{text} (no {', '.join(missing)})" if missing else text


@dataclass(frozen=True)
class FrameFacts:
    """What the summary needs of one frame besides its detections: from a FrameResult
    (offline) or from the topics the nodes published (a recording)."""

    chosen: tuple[str, ...]  # detector options
    energy: EnergyRecord
    latency_ms: float
    fallback: bool  # the frame was decided without the gate's model (or, live, its selection)
    corrections: tuple[str, ...] = ()  # odometry corrections that ran


def summarise(
    scored: Sequence[ScoredFrame],
    facts: Sequence[FrameFacts],
    *,
    policy: str,
    budget_j: float | None,
    odometry_policy: str = "none",
    trajectories: Sequence[tuple[Trajectory, Trajectory]] = (),
    frames_without_output: int = 0,
) -> Evaluation:
    """``trajectories``: per drive, (ground truth, estimate), for the odometry figures;
    ``frames_without_output``: how many of ``scored`` had no frame (their detections
    are empty)."""
    metrics = evaluate_per_context(scored)
    energy = np.array([f.energy.total_energy_j for f in facts]) if facts else np.zeros(1)
    measured = np.array([f.energy.measured_energy_j for f in facts] or [np.nan])
    latency = np.array([f.latency_ms for f in facts] or [np.nan])
    usage = {n: float(np.mean([n in f.chosen for f in facts] or [0])) for n in CHOICE_NAMES}
    corrections = {
        c: float(np.mean([c in f.corrections for f in facts] or [0])) for c in CORRECTIONS
    }
    scored_drives = [(truth, estimate) for truth, estimate in trajectories if len(estimate) >= 3]
    odometry = {}
    if scored_drives:
        errors = combined_errors(scored_drives)
        odometry = {
            "ate_rmse_m": errors.ate_rmse_m,
            "ate_pct": errors.ate_pct,
            "rpe_trans_pct": errors.rpe_trans_pct,
            "path_length_m": errors.path_length_m,
        }
    overall = metrics["all"]
    return Evaluation(
        frames=len(scored),
        policy=policy,
        budget_j=budget_j,
        map=overall.map,
        map_per_context={c: m.map for c, m in metrics.items() if c != "all"},
        ap_per_class=overall.ap_per_class,
        **overall.mean_tp_errors,
        nds3=overall.nds3,
        tp_errors_per_class=overall.tp_errors,
        classes_without_truth={
            c: m.classes_without_truth for c, m in metrics.items() if m.classes_without_truth
        },
        map_all_points=overall.map_all_points,
        energy_j_per_frame=float(energy.mean()),
        energy_j_per_frame_p95=float(np.percentile(energy, 95)),
        measured_energy_j_per_frame=float(np.mean(measured)),
        meter=facts[0].energy.meter if facts else "profile",
        latency_ms_p50=float(np.percentile(latency, 50)),
        latency_ms_p99=float(np.percentile(latency, 99)),
        option_usage=usage,
        budget_violations=int(sum(f.energy.over_budget for f in facts)),
        fallback_frames=int(sum(f.fallback for f in facts)),
        frames_without_output=frames_without_output,
        odometry_policy=odometry_policy,
        odometry_usage=corrections,
        **odometry,
    )


class Tally:
    """Collects frame results and their ground truth, then summarises."""

    def __init__(self, pipeline: DynamicFusionPipeline) -> None:
        self.pipeline = pipeline
        self.scored: list[ScoredFrame] = []
        self.facts: list[FrameFacts] = []
        self.drives: list[tuple[Trajectory, list] | None] = []  # (truth, estimates)
        self.drive_name = ""
        self.lost = 0

    def start_drive(self, truth_odometry: Trajectory | None, name: str = "") -> None:
        """Frames added from now on are of a new drive (``name``: its bag), scored
        against this truth."""
        self.drives.append((truth_odometry, []) if truth_odometry is not None else None)
        self.drive_name = name

    def add(self, result: FrameResult, truth: list[Detection], column: str) -> None:
        decision = result.decision
        ran = result.odometry.ran if result.odometry else ()
        facts = FrameFacts(
            decision.options, result.energy, result.latency_ms, bool(decision.fallback), ran
        )
        self.facts.append(facts)
        self.scored.append(
            ScoredFrame(
                result.detections, truth, column, result.selection.stamp_ns, self.drive_name
            )
        )
        drive = self.drives[-1] if self.drives else None
        if drive is not None and result.odometry and result.odometry.estimate is not None:
            drive[1].append(result.odometry.estimate)

    def lose(self, lost: LostFrame) -> None:
        """A truth frame no frame was assembled for: scored with no detections."""
        self.lost += 1
        column = situation(lost) or "unlabelled"
        self.scored.append(ScoredFrame([], lost.truth, column, lost.stamp_ns, self.drive_name))

    def summary(self) -> Evaluation:
        pipeline = self.pipeline
        return summarise(
            self.scored,
            self.facts,
            policy=pipeline.policy.text,
            budget_j=pipeline.budget_j,
            odometry_policy=pipeline.odometry_policy.text if pipeline.odometry_policy else "none",
            trajectories=[
                (truth, Trajectory.from_estimates(estimates))
                for truth, estimates in filter(None, self.drives)
            ],
            frames_without_output=self.lost,
        )


def evaluate_bags(
    pipeline: DynamicFusionPipeline,
    bags: Sequence[Path],
    *,
    values: dict | None = None,
    progress: bool = True,
) -> Evaluation:
    """Every frame of labelled bags through the pipeline, in order, one stream per bag;
    ``values``: the sensor parameters (``sensor_params``), the defaults when None."""
    return replay_bags(pipeline, bags, values=values, progress=progress).summary()


def replay_bags(
    pipeline: DynamicFusionPipeline,
    bags: Sequence[Path],
    *,
    values: dict | None = None,
    progress: bool = True,
) -> Tally:
    """The frames behind ``evaluate_bags``, kept (scored frames, facts) for export."""
    tally = Tally(pipeline)
    for bag in bags:
        pipeline.reset()
        tally.start_drive(_truth_odometry(Path(bag)) if pipeline.odometry else None, str(bag))
        frames: Iterable = read_frames(Path(bag), values=values, on_lost=tally.lose)
        frames = tqdm(
            frames,
            total=bag_duration_frames(Path(bag), values),
            desc=Path(bag).name,
            unit="frame",
            disable=not progress,
            leave=False,
        )
        for labelled in frames:  # every frame runs (the filter, the gate's memory), as live
            result = pipeline.process(labelled.frame, labelled.truth or [])
            if labelled.scored:
                tally.add(result, labelled.truth, situation(labelled) or "unlabelled")
    return tally


def _truth_odometry(bag: Path) -> Trajectory | None:
    try:
        return read_odometry(bag)
    except ValueError as error:  # a bag without it: detections are still scored
        print(f"warning: {error}: odometry not scored", file=sys.stderr)
        return None


def replay_record(pipeline: DynamicFusionPipeline, record: DetectionRecord) -> Evaluation:
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


def recorded_pipeline(record: DetectionRecord, gate, **options) -> DynamicFusionPipeline:
    """A pipeline whose detections, context features and oracle scores come from a
    record (the gate may know fewer configurations than were recorded)."""
    runner = RecordedRunner(record)
    columns = [record.configurations.index(c) for c in gate.configurations]

    def scorer(frame, detections, truth):
        return runner.quality(frame, detections, truth)[columns]

    return DynamicFusionPipeline(
        runner, gate, context=runner.features, configuration_scorer=scorer, **options
    )
