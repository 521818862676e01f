"""``DynamicFusionPipeline``: the per-frame flow that the nodes and the evaluator share.

frame -> context features -> odometry corrections and branches chosen under one budget
-> chosen branches -> late fusion -> detections; the IMU filter stepped with the chosen
corrections -> odometry; with the selection and the frame's energy record. Nothing else
in the package re-implements a step, so what ``dynfusion evaluate`` prints is what the
nodes publish.

The collaborators are injected (the branch runner, the context estimator), so a
benchmark can replay recorded branch outputs through this very object instead of
running the network again for every policy and budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from dynfusion_ros.core.branches.registry import BRANCHES, stems_for
from dynfusion_ros.core.branches.runner import BranchOutputs, BranchRunner
from dynfusion_ros.core.context import ContextEstimator, ContextFeatures
from dynfusion_ros.core.energy import EnergyMeter, EnergyProfile
from dynfusion_ros.core.fusion import METHODS, fuse
from dynfusion_ros.core.gate import SENSORS, Decision, Gate, GateModel, Policy
from dynfusion_ros.core.odometry.estimator import CORRECTIONS, OdometryEstimator, OdometryStep
from dynfusion_ros.core.odometry.planner import CorrectionLimits, CorrectionPlanner, OdometryPolicy
from dynfusion_ros.core.quality import selection_qualities
from dynfusion_ros.core.types import Detection, EnergyRecord, Modality, Selection, SensorFrame


class Runner(Protocol):
    def run(self, frame: SensorFrame, branches: Sequence[str]) -> BranchOutputs: ...


SelectionScorer = Callable[
    [SensorFrame, Mapping[str, list[Detection]], list[Detection]], np.ndarray
]


@dataclass
class Choice:
    """What a frame will run, decided before any stem runs."""

    selection: Selection
    decision: Decision
    features: ContextFeatures | None  # None when the choice came from another process
    outputs: BranchOutputs | None  # every branch already run: the oracle needs them to choose
    started: float  # perf_counter when the frame started, for its latency
    meter_sample: object  # the energy meter's reading then


@dataclass
class FrameResult:
    """Everything one frame produced."""

    detections: list[Detection]
    selection: Selection
    energy: EnergyRecord
    features: ContextFeatures | None
    decision: Decision
    branch_detections: dict[str, list[Detection]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # branch -> why it could not run
    latency_ms: float = float("nan")
    odometry: OdometryStep | None = None  # None where this pipeline runs no odometry


MAX_BUDGET_J = 1e3  # per frame: 10 kW for a 0.1 s frame, beyond any robot's compute


def check_budget(budget_j: float | None) -> float | None:
    """A budget is a positive number of joules per frame, or None for no budget."""
    if budget_j is None:
        return None
    if isinstance(budget_j, bool) or not isinstance(budget_j, int | float):
        raise ValueError(f"energy budget must be a number of joules, got {budget_j!r}")
    if not (math.isfinite(budget_j) and budget_j > 0):
        raise ValueError(f"energy budget must be a positive number of joules, got {budget_j}")
    if budget_j > MAX_BUDGET_J:
        raise ValueError(f"energy budget {budget_j:g} J per frame is beyond {MAX_BUDGET_J:g} J")
    return float(budget_j)


def load_gate(
    profile: Path,
    gate: Path | None,
    *,
    branch_names: Sequence[str] = tuple(BRANCHES),
    hysteresis_frames: int = 2,
) -> Gate:
    """The gate from its files: the energy profile and (when given) the gate model; a
    missing or corrupt file is an error naming it."""
    model = GateModel.load(gate) if gate is not None else None
    energy = EnergyProfile.load(profile)
    return Gate(energy, model, branch_names=branch_names, hysteresis_frames=hysteresis_frames)


class DynamicFusionPipeline:
    """The per-frame flow. ``runner`` may be None where only choices are made (the
    context estimator never runs a branch)."""

    def __init__(
        self,
        runner: Runner | None,
        gate: Gate,
        *,
        policy: Policy | str = "dynamic",
        budget_j: float | None = None,
        fusion_method: str = "wbf",
        meter: EnergyMeter | None = None,
        context: Callable[[SensorFrame], ContextFeatures] | None = None,
        selection_scorer: SelectionScorer | None = None,
        odometry_policy: OdometryPolicy | str | None = None,
        odometry: OdometryEstimator | None = None,
        correction_limits: CorrectionLimits | None = None,
    ) -> None:
        """``odometry_policy`` None: no corrections are planned (nor paid for).
        ``odometry``: the estimator that runs them, in the process that executes frames
        (the fusion node, the evaluator); the context estimator plans without one."""
        if fusion_method not in METHODS:
            raise ValueError(f"unknown fusion method {fusion_method!r}; choose from {METHODS}")
        self.runner, self.gate, self.meter = runner, gate, meter
        self.fusion_method = fusion_method
        self.context = context or ContextEstimator()
        self.selection_scorer = selection_scorer or self.score_selections
        self.calibration = gate.model.calibration if gate.model else None
        self.policy = policy
        self.budget_j = budget_j
        self.odometry, self.planner = odometry, CorrectionPlanner()
        self.correction_limits = correction_limits or CorrectionLimits()
        self.odometry_policy = odometry_policy

    @classmethod
    def from_files(
        cls,
        branches: Path,
        profile: Path,
        gate: Path | None,
        *,
        device: str = "cpu",
        hysteresis_frames: int = 2,
        **options,
    ) -> DynamicFusionPipeline:
        """Load the branch network, the energy profile and (when given) the gate model;
        every missing or corrupt file is an error naming it."""
        runner = BranchRunner.load(branches, device=device)
        names = runner.branch_names
        return cls(
            runner,
            load_gate(profile, gate, branch_names=names, hysteresis_frames=hysteresis_frames),
            **options,
        )

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy | str) -> None:
        self._policy = Policy.parse(policy) if isinstance(policy, str) else policy
        self.gate.reset()

    @property
    def odometry_policy(self) -> OdometryPolicy | None:
        return self._odometry_policy

    @odometry_policy.setter
    def odometry_policy(self, policy: OdometryPolicy | str | None) -> None:
        if isinstance(policy, str):
            policy = OdometryPolicy.parse(policy)
        if policy is not None and policy.kind != "none":
            self.gate.profile.odometry_energy_j(CORRECTIONS)  # every price known, or an error
        self._odometry_policy = policy

    @property
    def budget_j(self) -> float | None:
        return self._budget_j

    @budget_j.setter
    def budget_j(self, budget_j: float | None) -> None:
        self._budget_j = check_budget(budget_j)

    def reset(self) -> None:
        """Forget the stream (a new bag, a backwards time jump)."""
        self.gate.reset()
        if isinstance(self.context, ContextEstimator):
            self.context.reset()
        self.planner.reset()
        if self.odometry is not None:
            self.odometry.reset()

    def score_selections(
        self, _: SensorFrame, per_branch: Mapping[str, list[Detection]], truth: list[Detection]
    ) -> np.ndarray:
        """True per-frame quality of every candidate selection (for the oracle)."""
        return selection_qualities(
            per_branch,
            truth,
            self.gate.selections,
            fusion_method=self.fusion_method,
            calibration=self.calibration,
        )

    def choose(self, frame: SensorFrame, truth: list[Detection] | None = None) -> Choice:
        """The first half of a frame (the context estimator's): features and the selection,
        before any stem runs. ``truth`` is needed by the oracle only."""
        started = time.perf_counter()
        sample = self.meter.sample() if self.meter else None
        features = self.context(frame)
        true_quality, outputs = None, None
        if self.policy.kind == "oracle":
            if truth is None:
                raise ValueError("the oracle policy needs ground truth (offline evaluation only)")
            outputs = self._runner().run(frame, self.gate.branch_names)
            true_quality = self.selection_scorer(frame, outputs.detections, truth)
        corrections = self.plan_odometry(features)
        odometry_j = self.gate.profile.odometry_energy_j(corrections)
        budget = None if self.budget_j is None else self.budget_j - odometry_j
        decision = self.gate.decide(features, self.policy, budget, true_quality)
        selection = self._selection(frame, features, decision, corrections, odometry_j)
        return Choice(selection, decision, features, outputs, started, sample)

    def plan_odometry(self, features: ContextFeatures) -> tuple[str, ...]:
        """The odometry corrections this frame runs; their energy comes off the budget
        before the gate spends the rest on branches."""
        policy = self.odometry_policy
        if policy is None:
            return ()
        prices, limits, budget = self.gate.profile.odometry_j, self.correction_limits, self.budget_j
        allowance = None
        if budget is not None:
            spare = budget - self.gate.cheapest_usable_j(features)
            allowance = max(0.0, min(limits.max_budget_share * budget, spare))
        return self.planner.plan(features, policy, allowance, prices, limits)

    def adopt(self, selection: Selection) -> Choice:
        """A selection made elsewhere (the fusion node receives it from the context
        estimator) as this frame's choice; unknown branch names are a ValueError."""
        unknown = set(selection.branch_names) - set(self.gate.branch_names)
        if unknown:
            raise ValueError(f"selection names unknown branches {sorted(unknown)}")
        unknown = set(selection.odometry_corrections) - set(CORRECTIONS)
        if unknown:
            raise ValueError(f"selection names unknown odometry corrections {sorted(unknown)}")
        chosen = tuple(
            n for n, c in zip(selection.branch_names, selection.chosen, strict=True) if c
        )
        decision = Decision(
            chosen,
            selection.selection_utility,
            selection.predicted_energy_j,
            dict(zip(selection.branch_names, selection.predicted_utility, strict=True)),
            selection.context_label,
            dict(selection.context_scores),
        )
        sample = self.meter.sample() if self.meter else None
        return Choice(selection, decision, None, None, time.perf_counter(), sample)

    def execute(self, frame: SensorFrame, choice: Choice) -> FrameResult:
        """The second half (the fusion node's): run the chosen branches, fuse, account."""
        decision = choice.decision
        outputs = choice.outputs or self._runner().run(frame, decision.chosen)
        ran = {n: outputs.detections[n] for n in decision.chosen if n in outputs.detections}
        detections = fuse(ran, self.fusion_method, calibration=self.calibration)
        odometry = None
        if self.odometry is not None:
            odometry = self.odometry.step(frame, choice.selection.odometry_corrections)
        meter = self.meter
        measured = meter.joules_since(choice.meter_sample) if meter else float("nan")
        profile = self.gate.profile
        stems = [stem.value for stem in stems_for(ran)]
        energy = EnergyRecord(
            frame.stamp_ns,
            profile.components_j(stems, ran, odometry.ran if odometry else ()),
            profile.branch_energy_j(ran),
            choice.selection.budget_j,
            meter.name if meter else "profile",
            measured,
        )
        return FrameResult(
            detections,
            choice.selection,
            energy,
            choice.features,
            decision,
            ran,
            {n: outputs.skipped[n] for n in decision.chosen if n in outputs.skipped},
            (time.perf_counter() - choice.started) * 1e3,
            odometry,
        )

    def _runner(self) -> Runner:
        if self.runner is None:
            raise RuntimeError("this pipeline makes choices only: it has no branch runner")
        return self.runner

    def process(self, frame: SensorFrame, truth: list[Detection] | None = None) -> FrameResult:
        """One frame through the whole flow, in one process (the evaluator)."""
        return self.execute(frame, self.choose(frame, truth))

    def _selection(
        self,
        frame: SensorFrame,
        features: ContextFeatures,
        decision: Decision,
        corrections: tuple[str, ...],
        odometry_j: float,
    ) -> Selection:
        names = self.gate.branch_names
        return Selection(
            stamp_ns=frame.stamp_ns,
            policy=self.policy.text,
            branch_names=names,
            chosen=tuple(n in decision.chosen for n in names),
            predicted_utility=tuple(decision.branch_utility.get(n, float("nan")) for n in names),
            selection_utility=decision.utility,
            predicted_energy_j=decision.energy_j + odometry_j,
            budget_j=self.budget_j or 0.0,
            context_label=decision.context_label,
            context_scores=dict(decision.context_scores),
            sensor_available={m: features.available(m) for m in (*SENSORS, Modality.IMU)},
            sensor_age_s={m: frame.staleness_s(m) for m in SENSORS},
            odometry_corrections=corrections,
        )
