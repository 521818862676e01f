"""Parameters of the choice (budget, policy, gate files), declared by both nodes: the
context estimator chooses with them; the fusion node keeps the same gate to choose
itself when no selection arrives for a frame (its fallback)."""

from __future__ import annotations

from pathlib import Path

from dynfusion_ros.core.gate import Gate, Policy
from dynfusion_ros.core.pipeline import check_budget, load_gate
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


def file_or_empty(value: object) -> str:
    return "" if value == "" or Path(str(value)).is_file() else f"no file {value!r}"


GATE_PARAMS = (
    Param(
        "energy_budget_j",
        0.35,
        "Energy budget per frame (J). The gate runs the best selection of branches whose "
        "energy by the profile fits it. Settable at run time; must be positive.",
        runtime=True,
        check=_budget,
    ),
    Param(
        "policy",
        "dynamic",
        "How branches are chosen: dynamic (the gate, under the budget), all, "
        "static:<branch>+<branch>..., topk:<k>. Settable at run time.",
        runtime=True,
        check=_policy,
    ),
    Param(
        "hysteresis_frames",
        2,
        "Frames in a row a different selection must look better before the dynamic policy"
        " switches to it (1: at once).",
        1,
        100,
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
        "Energy profile (YAML, J per stem and head); empty: the shipped "
        "config/energy_profile.yaml.",
        check=file_or_empty,
    ),
)


def gate_files(values: dict) -> tuple[Path, Path]:
    """(energy profile, gate model) paths, the shipped ones where the parameter is empty."""
    profile = Path(values["energy_profile"]) if values["energy_profile"] else None
    gate = Path(values["gate_model"]) if values["gate_model"] else None
    return profile or default_energy_profile(), gate or default_model_path("gate.json")


def make_gate(values: dict, branch_names: tuple[str, ...] | None = None) -> Gate:
    profile, gate = gate_files(values)
    options = {"branch_names": branch_names} if branch_names else {}
    return load_gate(profile, gate, hysteresis_frames=values["hysteresis_frames"], **options)
