"""Parameters of the choice (budget, policies, gate files), declared by both nodes: the
context estimator chooses with them; the fusion node keeps the same gate to choose
itself when no selection arrives for a frame (its fallback)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dynfusion_ros.core.gate import BUDGET_WINDOW_FRAMES, Gate, Policy
from dynfusion_ros.core.odometry.planner import CorrectionLimits, OdometryPolicy
from dynfusion_ros.core.pipeline import DynamicFusionPipeline, check_budget, load_gate
from dynfusion_ros.resources import default_energy_profile, default_model_path
from dynfusion_ros.ros.parameters import Param


def _budget(value: object) -> str:
    try:
        check_budget(value)
    except ValueError as error:
        return str(error)
    return ""


def _policy(value: object) -> str:
    try:
        policy = Policy.parse(str(value))
    except ValueError as error:
        return str(error)
    return "oracle needs ground truth: offline evaluation only" if policy.kind == "oracle" else ""


def _odometry_policy(value: object) -> str:
    try:
        OdometryPolicy.parse(str(value))
    except ValueError as error:
        return str(error)
    return ""


def file_or_empty(value: object) -> str:
    return "" if value == "" or Path(str(value)).is_file() else f"no file {value!r}"


GATE_PARAMS = (
    Param(
        "energy_budget_j",
        0.065,
        "Energy budget per frame (J), a mean over budget_window_frames frames. The gate "
        "runs the detector configuration (a level per stem, or off) of best predicted "
        "value among those whose energy by the profile fits the frame's budget plus what "
        "earlier frames saved. Settable at run time; must be positive.",
        runtime=True,
        check=_budget,
    ),
    Param(
        "policy",
        "dynamic",
        "How the detector's configuration is chosen: dynamic (the gate, under the budget), "
        "full (every stem at its full level), static:<option>+<option>... (e.g. "
        "static:camera_half+lidar; options: camera, camera_half, lidar, lidar_early, "
        "radar), late (every stem alone, detections fused after: HydraFusion's baseline)."
        " Settable at run time.",
        runtime=True,
        check=_policy,
    ),
    Param(
        "odometry_corrections",
        "dynamic",
        "Which odometry corrections update the IMU filter: dynamic (those whose sensor is "
        "usable on the frame, cheapest first, within odometry_budget_share of the budget; "
        "the camera only on frames without a usable radar scan), all, none (IMU and "
        "ground-vehicle constraint only), or any of radar, camera, lidar joined by +. "
        "Their energy is paid from energy_budget_j and its savings, with the detector's. "
        "Settable at run time.",
        runtime=True,
        check=_odometry_policy,
    ),
    Param(
        "odometry_budget_share",
        CorrectionLimits.max_budget_share,
        "Largest share of energy_budget_j the dynamic odometry corrections may take on "
        "average, each at its price spread over the frames since it last ran (0-1).",
        0.0,
        1.0,
        runtime=True,
    ),
    Param(
        "odometry_lidar_interval_s",
        CorrectionLimits.lidar_interval_s,
        "Shortest time between two lidar registrations under the dynamic odometry policy"
        " (s); 0: every sweep. Between them the radar-aided filter drifts by centimetres.",
        0.0,
        10.0,
        runtime=True,
    ),
    Param(
        "hysteresis_frames",
        2,
        "Frames in a row a different configuration must look better before the dynamic "
        "policy switches to it (1: at once); stepping into and out of reuse is exempt.",
        1,
        100,
    ),
    Param(
        "budget_window_frames",
        BUDGET_WINDOW_FRAMES,
        "Frames over which energy_budget_j is a mean: a frame may spend what the frames "
        "before it saved, up to this many budgets in all (1: every frame within its own "
        "budget, so a stem dearer than the budget never runs, nor can its features be "
        "reused).",
        1,
        1000,
    ),
    Param(
        "gate_model",
        "",
        "Gate model (JSON beside its .safetensors); empty: the shipped models/gate.json.",
        check=file_or_empty,
    ),
    Param(
        "energy_profile",
        "",
        "Energy profile (YAML, J per detector option and head); empty: the shipped "
        "config/energy_profile.yaml.",
        check=file_or_empty,
    ),
)
GATE_DEFAULTS = {param.name: param.default for param in GATE_PARAMS}


def gate_files(values: dict) -> tuple[Path, Path]:
    """(energy profile, gate model) paths, the shipped ones where the parameter is empty."""
    profile = Path(values["energy_profile"]) if values["energy_profile"] else None
    gate = Path(values["gate_model"]) if values["gate_model"] else None
    return profile or default_energy_profile(), gate or default_model_path("gate.json")


def make_gate(values: dict) -> Gate:
    profile, gate = gate_files(values)
    return load_gate(
        profile,
        gate,
        hysteresis_frames=values["hysteresis_frames"],
        budget_window_frames=values["budget_window_frames"],
    )


LIMIT_OF_PARAM = {
    "odometry_budget_share": "max_budget_share",
    "odometry_lidar_interval_s": "lidar_interval_s",
}


def choice_options(values: dict) -> dict:
    """The pipeline's keyword arguments for how frames are chosen."""
    limits = {field: values[name] for name, field in LIMIT_OF_PARAM.items()}
    return {
        "policy": values["policy"],
        "budget_j": values["energy_budget_j"],
        "odometry_policy": values["odometry_corrections"],
        "correction_limits": CorrectionLimits(**limits),
    }


def apply_choice_change(pipeline: DynamicFusionPipeline, name: str, value: object) -> None:
    """A run-time change of one of GATE_PARAMS, already validated, into the pipeline."""
    if name == "energy_budget_j":
        pipeline.budget_j = value
    elif name == "policy":
        pipeline.policy = value
    elif name == "odometry_corrections":
        pipeline.odometry_policy = value
    elif name in LIMIT_OF_PARAM:
        limits = pipeline.correction_limits
        pipeline.correction_limits = dataclasses.replace(limits, **{LIMIT_OF_PARAM[name]: value})
