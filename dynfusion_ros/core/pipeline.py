"""``DynamicFusionPipeline``: the per-frame flow that the nodes and the evaluator share.

frame -> context features -> odometry corrections and the detector's configuration
chosen under one budget -> the IMU filter stepped with the corrections -> the detector
run in that configuration, reused features moved by the filter's motion -> detections
and odometry; with the selection and the frame's energy record. Nothing else in the
package re-implements a step, so what ``dynfusion evaluate`` prints is what the nodes
publish.

The collaborators are injected (the detector runner, the context estimator), so a
benchmark can replay recorded detector outputs through this very object instead of
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

from dynfusion_ros.core.context import ContextEstimator, ContextFeatures
from dynfusion_ros.core.detector.levels import CHOICE_NAMES, Configuration
from dynfusion_ros.core.detector.reuse import planar_pose
from dynfusion_ros.core.detector.runner import DetectorOutputs, DetectorRunner
from dynfusion_ros.core.energy import EnergyMeter, EnergyProfile
from dynfusion_ros.core.fusion import METHODS, fuse
from dynfusion_ros.core.gate import SINGLE_STEMS, Decision, Gate, GateModel, Policy
from dynfusion_ros.core.odometry.estimator import CORRECTIONS, OdometryEstimator, OdometryStep
from dynfusion_ros.core.odometry.planner import (
    Allowance,
    CorrectionLimits,
    CorrectionPlanner,
    OdometryPolicy,
)
from dynfusion_ros.core.quality import frame_quality
from dynfusion_ros.core.types import Detection, EnergyRecord, Modality, Selection, SensorFrame

SENSORS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)


class Runner(Protocol):
    def run(
        self, frame: SensorFrame, configuration: Configuration, pose: np.ndarray | None
    ) -> DetectorOutputs: ...

    def run_every(
        self,
        frame: SensorFrame,
        configurations: Sequence[Configuration],
        pose: np.ndarray | None,
    ) -> tuple[dict[str, list[Detection]], dict[str, str]]: ...

    def follow(
        self, frame: SensorFrame, detections: list[Detection], pose: np.ndarray | None
    ) -> None: ...


ConfigurationScorer = Callable[
    [SensorFrame, Mapping[str, list[Detection]], list[Detection]], np.ndarray
]


@dataclass
class Choice:
    """What a frame will run, decided before any stem runs."""

    selection: Selection
    decision: Decision
    features: ContextFeatures | None  # None when the choice came from another process
    started: float  # perf_counter when the frame started, for its latency
    meter_sample: object  # the energy meter's reading then
    odometry: OdometryStep | None = None  # stepped already (the oracle needs the pose)
    # the oracle ran every configuration to choose: detections by configuration, and
    # why each option that could not run could not
    every: tuple[dict[str, list[Detection]], dict[str, str]] | None = None


@dataclass
class FrameResult:
    """Everything one frame produced."""

    detections: list[Detection]
    selection: Selection
    energy: EnergyRecord
    features: ContextFeatures | None
    decision: Decision
    # per configuration that ran: its detections (more than one for the late baseline)
    configuration_detections: dict[str, list[Detection]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # option -> why it could not run
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


def load_gate(profile: Path, gate: Path | None, **options) -> Gate:
    """The gate from its files: the energy profile and (when given) the gate model; a
    missing or corrupt file is an error naming it. ``options``: ``Gate``'s keywords."""
    model = GateModel.load(gate) if gate is not None else None
    return Gate(EnergyProfile.load(profile), model, **options)


def pose_of(step: OdometryStep | None) -> np.ndarray | None:
    """(x, y, yaw) of base_link in odom after this frame's odometry step, if it has one."""
    if step is None or step.estimate is None:
        return None
    return planar_pose(step.estimate.position, step.estimate.orientation)


class DynamicFusionPipeline:
    """The per-frame flow. ``runner`` may be None where only choices are made (the
    context estimator never runs the detector)."""

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
        configuration_scorer: ConfigurationScorer | None = None,
        odometry_policy: OdometryPolicy | str | None = None,
        odometry: OdometryEstimator | None = None,
        correction_limits: CorrectionLimits | None = None,
    ) -> None:
        """``odometry_policy`` None: no corrections are planned (nor paid for).
        ``odometry``: the estimator that runs them, in the process that executes frames
        (the fusion node, the evaluator); the context estimator plans without one.
        Without it the detector has no ego motion to move remembered features by, so
        reuse is refused by the runner (named in ``FrameResult.skipped``).
        ``fusion_method``: how the late baseline merges the stems' detections."""
        if fusion_method not in METHODS:
            raise ValueError(f"unknown fusion method {fusion_method!r}; choose from {METHODS}")
        self.runner, self.gate, self.meter = runner, gate, meter
        self.fusion_method = fusion_method
        self.context = context or ContextEstimator()
        self.configuration_scorer = configuration_scorer or self.score_configurations
        self.policy = policy
        self.budget_j = budget_j
        self.odometry, self.planner = odometry, CorrectionPlanner()
        self.correction_limits = correction_limits or CorrectionLimits()
        self.odometry_policy = odometry_policy

    @classmethod
    def from_files(
        cls,
        detector: Path,
        profile: Path,
        gate: Path | None,
        *,
        device: str = "cpu",
        gate_options: Mapping | None = None,
        **options,
    ) -> DynamicFusionPipeline:
        """Load the detector, the energy profile and (when given) the gate model; every
        missing or corrupt file is an error naming it. ``gate_options``: ``Gate``'s
        keywords (hysteresis, budget window)."""
        runner = DetectorRunner.load(detector, device=device)
        return cls(runner, load_gate(profile, gate, **(gate_options or {})), **options)

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
        budget_j = check_budget(budget_j)
        if hasattr(self, "_budget_j") and budget_j != self._budget_j:
            self.gate.reset_account()
        self._budget_j = budget_j

    def reset(self) -> None:
        """Forget the stream (a new bag, a backwards time jump)."""
        self.gate.reset()
        if self.runner is not None:
            self.runner.reset()
        if isinstance(self.context, ContextEstimator):
            self.context.reset()
        self.planner.reset()
        if self.odometry is not None:
            self.odometry.reset()

    def score_configurations(
        self, _: SensorFrame, detections: Mapping[str, list[Detection]], truth: list[Detection]
    ) -> np.ndarray:
        """True per-frame quality of every configuration the gate knows (for the oracle);
        one that could not run scores nothing."""
        return np.array(
            [
                frame_quality(detections[c.text], truth) if c.text in detections else 0.0
                for c in self.gate.configurations
            ]
        )

    def choose(self, frame: SensorFrame, truth: list[Detection] | None = None) -> Choice:
        """The first half of a frame (the context estimator's): features and the
        configuration, before any stem runs. ``truth`` is needed by the oracle only,
        which steps the odometry here (the detector's reuse needs its pose)."""
        started = time.perf_counter()
        sample = self.meter.sample() if self.meter else None
        features = self.context(frame)
        corrections = self.plan_odometry(features)
        odometry_j = self.gate.profile.odometry_energy_j(corrections)
        true_quality, step, every = None, None, None
        if self.policy.kind == "oracle":
            if truth is None:
                raise ValueError("the oracle policy needs ground truth (offline evaluation only)")
            step = self._step_odometry(frame, corrections)
            every = self._runner().run_every(frame, self.gate.configurations, pose_of(step))
            true_quality = self.configuration_scorer(frame, every[0], truth)
        decision = self.gate.decide(features, self.policy, self.budget_j, true_quality, odometry_j)
        selection = self._selection(frame, features, decision, corrections, odometry_j)
        return Choice(selection, decision, features, started, sample, step, every)

    def plan_odometry(self, features: ContextFeatures) -> tuple[str, ...]:
        """The odometry corrections this frame runs; the gate then spends what the budget
        and the savings leave on the detector."""
        policy = self.odometry_policy
        if policy is None:
            return ()
        prices, limits, budget = self.gate.profile.odometry_j, self.correction_limits, self.budget_j
        allowance = None
        if budget is not None:
            spare = self.gate.available_j(budget) - self.gate.cheapest_usable_j(features)
            allowance = Allowance(limits.max_budget_share * budget, max(0.0, spare))
        return self.planner.plan(features, policy, allowance, prices, limits)

    def adopt(self, selection: Selection) -> Choice:
        """A selection made elsewhere (the fusion node receives it from the context
        estimator) as this frame's choice; unknown option names are a ValueError."""
        unknown = set(selection.branch_names) - set(CHOICE_NAMES)
        if unknown:
            raise ValueError(f"selection names unknown detector options {sorted(unknown)}")
        unknown = set(selection.odometry_corrections) - set(CORRECTIONS)
        if unknown:
            raise ValueError(f"selection names unknown odometry corrections {sorted(unknown)}")
        chosen = selection.chosen_branches
        if not chosen:
            configurations = ()
        elif selection.policy == "late":
            configurations = tuple(c for c in SINGLE_STEMS if c.names[0] in chosen)
        else:
            configurations = (Configuration.of(chosen),)  # raises on two levels of a stem
        # its fallback's reuse and savings follow what ran, under the selection's budget;
        # the account is the chooser's (this one misses the frames dropped on the way)
        odometry_j = self.gate.profile.odometry_energy_j(selection.odometry_corrections)
        budget = selection.budget_j if selection.budget_j > 0 else None
        if budget is not None and selection.allowed_j > 0:
            self.gate.account.follow(budget, selection.allowed_j)
        allowed = self.gate.available_j(budget) - odometry_j
        self.gate.note_run(configurations, budget, odometry_j)
        decision = Decision(
            configurations,
            selection.selection_utility,
            selection.predicted_energy_j - odometry_j,
            dict(zip(selection.branch_names, selection.predicted_utility, strict=True)),
            selection.context_label,
            dict(selection.context_scores),
            allowed_j=allowed,
        )
        sample = self.meter.sample() if self.meter else None
        return Choice(selection, decision, None, time.perf_counter(), sample)

    def _step_odometry(self, frame: SensorFrame, corrections: Sequence[str]) -> OdometryStep | None:
        return self.odometry.step(frame, corrections) if self.odometry is not None else None

    def execute(self, frame: SensorFrame, choice: Choice) -> FrameResult:
        """The second half (the fusion node's): step the odometry, run the detector in
        the chosen configuration (each, fused late, for the late baseline), account."""
        decision = choice.decision
        odometry = choice.odometry or self._step_odometry(
            frame, choice.selection.odometry_corrections
        )
        pose = pose_of(odometry)
        ran, configurations, skipped = self._detect(frame, choice, pose)
        if len(decision.chosen) > 1:
            detections = fuse(ran, self.fusion_method)
        else:
            detections = next(iter(ran.values()), [])
        if any(c.detects for c in configurations):  # what the next frame's tracks predict
            self._runner().follow(frame, detections, pose)
        meter = self.meter
        measured = meter.joules_since(choice.meter_sample) if meter else float("nan")
        profile = self.gate.profile
        energy = EnergyRecord(
            frame.stamp_ns,
            profile.components_j(configurations, odometry.ran if odometry else ()),
            profile.option_energy_j(configurations),
            choice.selection.budget_j,
            meter.name if meter else "profile",
            measured,
            decision.allowed_j + profile.odometry_energy_j(choice.selection.odometry_corrections)
            if choice.selection.budget_j
            else None,
        )
        return FrameResult(
            detections,
            choice.selection,
            energy,
            choice.features,
            decision,
            ran,
            skipped,
            (time.perf_counter() - choice.started) * 1e3,
            odometry,
        )

    def _detect(
        self, frame: SensorFrame, choice: Choice, pose: np.ndarray | None
    ) -> tuple[dict[str, list[Detection]], list[Configuration], dict[str, str]]:
        """Detections per configuration that ran, those configurations (less what could
        not contribute) and why each option left out was."""
        chosen = choice.decision.chosen
        if choice.every is not None:  # the oracle has run them all already
            detections, why = choice.every
            ran = [c for c in chosen if c.text in detections]
            skipped = {o.name: why[o.name] for c in chosen for o in c.options if o.name in why}
            return {c.text: detections[c.text] for c in ran}, ran, skipped
        outputs = [self._runner().run(frame, c, pose) for c in chosen]
        ran = [o.ran for o in outputs if o.ran]
        skipped = {name: reason for o in outputs for name, reason in o.skipped.items()}
        return {o.ran.text: o.detections for o in outputs if o.ran}, ran, skipped

    def _runner(self) -> Runner:
        if self.runner is None:
            raise RuntimeError("this pipeline makes choices only: it has no detector runner")
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
        names = CHOICE_NAMES
        return Selection(
            stamp_ns=frame.stamp_ns,
            policy=self.policy.text,
            branch_names=names,
            chosen=tuple(n in decision.options for n in names),
            predicted_utility=tuple(decision.option_utility.get(n, float("nan")) for n in names),
            selection_utility=decision.utility,
            predicted_energy_j=decision.energy_j + odometry_j,
            budget_j=self.budget_j or 0.0,
            allowed_j=decision.allowed_j + odometry_j if self.budget_j else 0.0,
            context_label=decision.context_label,
            context_scores=dict(decision.context_scores),
            sensor_available={m: features.available(m) for m in (*SENSORS, Modality.IMU)},
            sensor_age_s={m: frame.staleness_s(m) for m in SENSORS},
            odometry_corrections=corrections,
        )
