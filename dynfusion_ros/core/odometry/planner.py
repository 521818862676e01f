"""Which odometry corrections a frame runs, under the same budget as the detection branches.

The corrections are planned first and their energy is taken off the budget the gate
then fills with detection branches, so one budget holds the whole frame:

- ``dynamic``: every correction whose sensor is usable on this frame, cheapest first,
  while their energy stays within ``max_budget_share`` of the budget. The radar's
  doppler fit costs a few millijoules and keeps the filter's velocity honest in every
  weather, so it comes first; scan registration costs more than the lidar stem and is
  skipped when the budget is tight or the sweep is blind (dropped out, or mostly fog
  and snow backscatter, which registers the vehicle to the air around it).
- ``all``: every usable correction, whatever the budget.
- ``none``: the IMU and the ground-vehicle constraint alone (a baseline).
- ``radar``, ``lidar+radar``...: exactly these, when their sensors are usable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.odometry.estimator import CORRECTIONS
from dynfusion_ros.core.types import Modality


@dataclass(frozen=True)
class OdometryPolicy:
    """``dynamic``, ``all``, ``none`` or corrections joined by ``+``."""

    kind: str
    corrections: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "+".join(self.corrections) if self.kind == "fixed" else self.kind

    @classmethod
    def parse(cls, text: str) -> OdometryPolicy:
        text = text.strip()
        if text in ("dynamic", "all", "none"):
            return cls(text)
        names = tuple(name.strip() for name in text.split("+"))
        unknown = [name for name in names if name not in CORRECTIONS]
        if unknown or not text:
            raise ValueError(
                f"unknown odometry policy {text!r}; use dynamic, all, none or corrections "
                f"joined by + from {CORRECTIONS}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"odometry policy {text!r} names a correction twice")
        return cls("fixed", tuple(sorted(names, key=CORRECTIONS.index)))


@dataclass(frozen=True)
class CorrectionLimits:
    """When a sensor's data is worth a correction, from the frame's context features."""

    lidar_min_return_ratio: float = 0.3  # a sweep with fewer returns has dropped out
    lidar_max_near_fraction: float = 0.5  # more points this close: mostly backscatter
    max_budget_share: float = 0.5  # of the frame's budget, at most, for odometry

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must lie in [0, 1], got {value}")


def unusable_reason(name: str, features: ContextFeatures, limits: CorrectionLimits) -> str:
    """Why ``name`` cannot help on this frame, or '' when it can."""
    modality = Modality(name)
    if not features.available(modality):
        return f"no {name} data"
    if modality is Modality.LIDAR:
        values = features.values
        returns = values[FEATURE_NAMES.index("lidar_return_ratio")]
        near = values[FEATURE_NAMES.index("lidar_near_fraction")]
        if returns < limits.lidar_min_return_ratio:
            return f"lidar sweep {returns:.0%} full"
        if near > limits.lidar_max_near_fraction:
            return f"{near:.0%} of lidar returns are near backscatter"
    return ""


def plan_corrections(
    features: ContextFeatures,
    policy: OdometryPolicy,
    budget_j: float | None,
    prices_j: Mapping[str, float],
    limits: CorrectionLimits = CorrectionLimits(),
) -> tuple[str, ...]:
    """The corrections this frame runs (in CORRECTIONS order)."""
    if policy.kind == "none":
        return ()
    wanted = policy.corrections if policy.kind == "fixed" else CORRECTIONS
    usable = [name for name in wanted if not unusable_reason(name, features, limits)]
    if policy.kind != "dynamic" or budget_j is None:
        return tuple(usable)
    allowance, spent, chosen = limits.max_budget_share * budget_j, 0.0, []
    for name in sorted(usable, key=lambda n: prices_j[n]):
        if spent + prices_j[name] <= allowance:
            chosen.append(name)
            spent += prices_j[name]
    return tuple(name for name in CORRECTIONS if name in chosen)
