"""dynfusion_msgs/BranchSelection and EnergyReport to and from core Selection/EnergyRecord."""

from __future__ import annotations

import math

from dynfusion_msgs.msg import BranchSelection, EnergyReport

from dynfusion_ros.core.types import EnergyRecord, Modality, Selection
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.stamps import header_msg, stamp_ns


def _parallel(msg, key: str, *value_fields: str) -> None:
    expected = len(getattr(msg, key))
    for name in value_fields:
        if len(getattr(msg, name)) != expected:
            raise ConversionError(
                name, f"has {len(getattr(msg, name))} entries for {expected} {key}"
            )


def _modality(name: str, index: int) -> Modality:
    try:
        return Modality(name)
    except ValueError:
        known = ", ".join(m.value for m in Modality)
        raise ConversionError(
            f"sensor_names[{index}]", f"unknown sensor {name!r} ({known})"
        ) from None


def selection_to_msg(selection: Selection, frame_id: str = "base_link") -> BranchSelection:
    sensors = list(selection.sensor_available)
    return BranchSelection(
        header=header_msg(selection.stamp_ns, frame_id),
        policy=selection.policy,
        branch_names=list(selection.branch_names),
        chosen=list(selection.chosen),
        odometry_corrections=list(selection.odometry_corrections),
        predicted_utility=[float(u) for u in selection.predicted_utility],
        selection_utility=float(selection.selection_utility),
        predicted_energy_j=float(selection.predicted_energy_j),
        budget_j=float(selection.budget_j),
        allowed_j=float(selection.allowed_j),
        context_label=selection.context_label,
        context_names=list(selection.context_scores),
        context_scores=[float(s) for s in selection.context_scores.values()],
        sensor_names=[m.value for m in sensors],
        sensor_available=[bool(selection.sensor_available[m]) for m in sensors],
        sensor_age_s=[float(selection.sensor_age_s.get(m, math.nan)) for m in sensors],
    )


def _finite(msg, *names: str) -> None:
    """Figures the fusion node passes on (into EnergyReport, into its fallback budget):
    NaN or infinity there would be published."""
    for name in names:
        value = getattr(msg, name)
        if not math.isfinite(value) or value < 0:
            raise ConversionError(name, f"{value} is not a finite, non-negative number")


def msg_to_selection(msg) -> Selection:
    _finite(msg, "budget_j", "allowed_j", "predicted_energy_j")
    if not all(map(math.isfinite, msg.context_scores)):
        raise ConversionError("context_scores", "contains NaN or infinity")
    _parallel(msg, "branch_names", "chosen", "predicted_utility")
    _parallel(msg, "context_names", "context_scores")
    _parallel(msg, "sensor_names", "sensor_available", "sensor_age_s")
    sensors = [_modality(name, i) for i, name in enumerate(msg.sensor_names)]
    return Selection(
        stamp_ns=stamp_ns(msg.header),
        policy=msg.policy,
        branch_names=tuple(msg.branch_names),
        chosen=tuple(bool(c) for c in msg.chosen),
        predicted_utility=tuple(float(u) for u in msg.predicted_utility),
        selection_utility=float(msg.selection_utility),
        predicted_energy_j=float(msg.predicted_energy_j),
        budget_j=float(msg.budget_j),
        allowed_j=float(msg.allowed_j),
        context_label=msg.context_label,
        context_scores=dict(zip(msg.context_names, map(float, msg.context_scores), strict=True)),
        sensor_available=dict(zip(sensors, map(bool, msg.sensor_available), strict=True)),
        sensor_age_s=dict(zip(sensors, map(float, msg.sensor_age_s), strict=True)),
        odometry_corrections=tuple(msg.odometry_corrections),
    )


def energy_record_to_msg(record: EnergyRecord, frame_id: str = "base_link") -> EnergyReport:
    return EnergyReport(
        header=header_msg(record.stamp_ns, frame_id),
        component_names=list(record.component_energy_j),
        component_energy_j=[float(e) for e in record.component_energy_j.values()],
        branch_names=list(record.branch_energy_j),
        branch_energy_j=[float(e) for e in record.branch_energy_j.values()],
        total_energy_j=record.total_energy_j,
        budget_j=float(record.budget_j),
        allowed_j=float(record.budget_j if record.allowed_j is None else record.allowed_j),
        over_budget=record.over_budget,
        measured_energy_j=float(record.measured_energy_j),
        meter=record.meter,
    )


def msg_to_energy_record(msg) -> EnergyRecord:
    _parallel(msg, "component_names", "component_energy_j")
    _parallel(msg, "branch_names", "branch_energy_j")
    return EnergyRecord(
        stamp_ns=stamp_ns(msg.header),
        component_energy_j=dict(
            zip(msg.component_names, map(float, msg.component_energy_j), strict=True)
        ),
        branch_energy_j=dict(zip(msg.branch_names, map(float, msg.branch_energy_j), strict=True)),
        budget_j=float(msg.budget_j),
        meter=msg.meter,
        measured_energy_j=float(msg.measured_energy_j),
        allowed_j=float(msg.allowed_j),
    )
