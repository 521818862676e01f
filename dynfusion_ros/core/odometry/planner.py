"""Which odometry corrections a frame runs, under the same budget as the detection branches.

The corrections are planned first and their energy is taken off the budget the gate
then fills with detection branches, so one budget holds the whole frame:

- ``dynamic``: every correction whose sensor is usable on this frame and whose
  interval has passed, cheapest first, while their energy stays within the allowance
  (``Allowance``): ``max_budget_share`` of the budget as a mean, a correction counting
  its price spread over the frames since it last ran (the budget is a mean over frames
  too: a registration every 0.5 s costs a fifth of its price a frame), and on this frame
  never so much that the cheapest selection of branches the frame's sensors allow no
  longer fits its budget and the gate's savings (detection comes first). The radar's
  doppler fit costs about 5 mJ and keeps the filter's velocity honest in
  every weather, so it runs every frame. The camera measures the same velocity (and
  the yaw rate) for seven times that, and is blind in fog and against a low sun, so it
  stands in for the radar only: on frames without a usable radar scan.
  Scan registration costs more than the lidar stem; between sweeps the radar-aided
  filter drifts by millimetres, so one registration every ``lidar_interval_s`` holds
  the drift nearly as well as one per sweep (measured on the 60-s held-out mixed
  drive: ATE 0.046 % of path every 0.5 s, 0.037 % every sweep) at a fifth of the
  energy. It is
  skipped when the budget is tight or the sweep is blind (dropped out, or mostly fog
  and snow backscatter, which registers the vehicle to the air around it).
- ``all``: every usable correction on every frame, whatever the budget.
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
    """When a sensor's data is worth a correction, from the frame's context features,
    and how often the dynamic policy runs it."""

    lidar_min_return_ratio: float = 0.3  # a sweep with fewer returns has dropped out
    lidar_max_near_fraction: float = 0.4  # more points this close: mostly backscatter
    camera_min_sharpness: float = 0.024  # blurrier (fog, low sun): too few corners to track
    camera_max_dark_fraction: float = 0.6  # darker (blacked out, unlit): nothing to track
    max_budget_share: float = 0.5  # of the budget, at most, for odometry, as a mean
    lidar_interval_s: float = 0.5  # dynamic: at least this long between registrations

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            high = 10.0 if name.endswith("_s") else 1.0
            if not (math.isfinite(value) and 0 <= value <= high):
                raise ValueError(f"{name} must lie in [0, {high:g}], got {value}")

    def interval_ns(self, name: str) -> int:
        return round(getattr(self, f"{name}_interval_s", 0.0) * 1e9)


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
    if modality is Modality.CAMERA:
        values = features.values
        sharpness = values[FEATURE_NAMES.index("camera_sharpness")]
        dark = values[FEATURE_NAMES.index("camera_dark_fraction")]
        if not sharpness >= limits.camera_min_sharpness:
            return f"camera image too blurred to track (sharpness {sharpness:.3f})"
        if not dark <= limits.camera_max_dark_fraction:
            return f"{dark:.0%} of the camera image is dark"
    return ""


@dataclass(frozen=True)
class Allowance:
    """What the dynamic policy may spend on corrections: ``mean_j`` a frame on average
    (each correction's price spread over the frames since it last ran), and ``frame_j``
    on this frame."""

    mean_j: float
    frame_j: float


class CorrectionPlanner:
    """Plans each frame's corrections; remembers when each last ran (for intervals) and
    how many frames ago (for the mean allowance)."""

    def __init__(self) -> None:
        self.last_ns: dict[str, int] = {}
        self.frames_since: dict[str, int] = {}  # frames planned since it ran (or the start)

    def reset(self) -> None:
        self.last_ns.clear()
        self.frames_since.clear()

    def plan(
        self,
        features: ContextFeatures,
        policy: OdometryPolicy,
        allowance: Allowance | None,
        prices_j: Mapping[str, float],
        limits: CorrectionLimits,
    ) -> tuple[str, ...]:
        """The corrections the frame at ``features.stamp_ns`` runs (in CORRECTIONS order);
        ``allowance``: what the dynamic policy may spend on them (None: no limit)."""
        for name in CORRECTIONS:
            self.frames_since[name] = self.frames_since.get(name, 0) + 1
        if policy.kind == "none":
            return ()
        wanted = policy.corrections if policy.kind == "fixed" else CORRECTIONS
        usable = [name for name in wanted if not unusable_reason(name, features, limits)]
        if policy.kind == "dynamic":
            usable = [name for name in usable if self._due(name, features.stamp_ns, limits)]
            if "radar" in usable and "camera" in usable:  # the camera stands in for it only
                usable.remove("camera")
            if allowance is not None:
                usable = self._within(usable, allowance, prices_j)
        self.last_ns.update((name, features.stamp_ns) for name in usable)
        self.frames_since.update((name, 0) for name in usable)
        return tuple(name for name in CORRECTIONS if name in usable)

    def _within(
        self, names: list[str], allowance: Allowance, prices_j: Mapping[str, float]
    ) -> list[str]:
        """The cheapest first, while their mean and this frame's spending stay within
        the allowance."""
        mean, now, chosen = 0.0, 0.0, []
        for name in sorted(names, key=lambda n: prices_j[n]):
            price = prices_j[name]
            spread = price / self.frames_since[name]
            if mean + spread <= allowance.mean_j and now + price <= allowance.frame_j:
                chosen.append(name)
                mean, now = mean + spread, now + price
        return chosen

    def _due(self, name: str, stamp_ns: int, limits: CorrectionLimits) -> bool:
        last = self.last_ns.get(name)
        return last is None or not 0 <= stamp_ns - last < limits.interval_ns(name)
