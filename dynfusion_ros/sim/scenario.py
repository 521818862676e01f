"""Scenarios: which conditions and sensor faults a simulated drive goes through, and when.

A scenario is a list of phases (each a context with physical parameters) and faults, timed
as fractions of the drive so that one preset serves any ``--duration``. Parameters ramp
linearly over ``ramp_s`` at the start of each phase: fog rolls in, dusk falls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np


@dataclass(frozen=True)
class Conditions:
    """Physical parameters of the environment; every sensor model reads only these.

    ``fog_extinction_per_m`` is the atmospheric extinction coefficient: meteorological
    visibility is 3 / extinction (Koschmieder), so 0.03 /m is about 100 m of visibility.
    The sun's azimuth is measured from the ego's heading at the start of the drive.
    """

    ambient_light: float = 1.0
    fog_extinction_per_m: float = 0.0
    rain_rate_mm_h: float = 0.0
    snow_rate_mm_h: float = 0.0
    sun_elevation_deg: float = 45.0
    sun_azimuth_deg: float = 120.0
    headlights: float = 0.0

    def mix(self, other: Conditions, weight: float) -> Conditions:
        """Blend towards ``other`` (weight 0 = self, 1 = other), for phase transitions."""
        return Conditions(
            **{
                f.name: (1.0 - weight) * getattr(self, f.name) + weight * getattr(other, f.name)
                for f in fields(self)
            }
        )

    def as_mapping(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


CLEAR = Conditions()
CONTEXTS: Mapping[str, Conditions] = {
    "clear": CLEAR,
    "night": replace(CLEAR, ambient_light=0.001, sun_elevation_deg=-20.0, headlights=1.0),
    "fog": replace(CLEAR, ambient_light=0.7, fog_extinction_per_m=0.05, sun_elevation_deg=20.0),
    "rain": replace(CLEAR, ambient_light=0.5, rain_rate_mm_h=25.0, fog_extinction_per_m=0.004),
    "snow": replace(CLEAR, ambient_light=0.8, snow_rate_mm_h=4.0, fog_extinction_per_m=0.03),
    "glare": replace(CLEAR, sun_elevation_deg=4.0, sun_azimuth_deg=0.0),
}
"""Context label -> conditions. Labels are the names the gate and the evaluation use."""


FAULT_KINDS: Mapping[str, str] = {
    "camera_blackout": "camera delivers black frames (lens covered, sensor dead)",
    "camera_frozen": "camera repeats its last frame with fresh stamps",
    "lidar_partial": "lidar loses an azimuth sector (blocked window), `sector_deg` wide",
    "lidar_dropout": "lidar publishes empty clouds",
    "radar_clutter_storm": "radar reports `points` spurious detections per scan",
    "imu_bias_jump": "IMU biases step by `accel_mps2` and `gyro_radps`",
    "silent": "a topic (`topic`) publishes nothing",
    "timestamp_jitter": "header stamps of every sensor jitter by `sigma_s` (may reorder)",
}


@dataclass(frozen=True)
class Fault:
    """A sensor fault active from ``start`` to ``end`` (fractions of the drive)."""

    kind: str
    start: float
    end: float
    params: Mapping[str, float | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"fault {self.kind}: need 0 <= start < end <= 1")

    @property
    def label(self) -> str:
        return f"silent:{self.params['topic']}" if self.kind == "silent" else self.kind


@dataclass(frozen=True)
class Phase:
    """A context from ``start`` (fraction of the drive) until the next phase begins."""

    start: float
    context: str
    conditions: Conditions | None = None

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown context {self.context!r}; known: {', '.join(CONTEXTS)}")

    @property
    def resolved(self) -> Conditions:
        return self.conditions if self.conditions is not None else CONTEXTS[self.context]


@dataclass(frozen=True)
class ActiveContext:
    """What holds at one instant: the label, the (possibly ramping) conditions, the faults."""

    label: str
    conditions: Conditions
    faults: tuple[Fault, ...]

    def fault(self, kind: str) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind), None)

    def silent(self, topic: str) -> bool:
        return any(f.kind == "silent" and f.params.get("topic") == topic for f in self.faults)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...]
    faults: tuple[Fault, ...] = ()
    traffic_density: float = 1.0
    ramp_s: float = 4.0

    def __post_init__(self) -> None:
        starts = [p.start for p in self.phases]
        if not starts or starts[0] != 0.0 or starts != sorted(starts):
            raise ValueError(f"scenario {self.name}: phases must start at 0 and be in order")

    def at(self, t_s: float, duration_s: float) -> ActiveContext:
        """The context at ``t_s`` seconds into a drive of ``duration_s`` seconds."""
        fraction = t_s / duration_s
        index = int(np.searchsorted([p.start for p in self.phases], fraction, side="right")) - 1
        phase = self.phases[max(index, 0)]
        conditions = phase.resolved
        if index > 0:
            since_start = t_s - phase.start * duration_s
            if since_start < self.ramp_s:
                previous = self.phases[index - 1].resolved
                conditions = previous.mix(conditions, since_start / self.ramp_s)
        faults = tuple(f for f in self.faults if f.start <= fraction < f.end)
        return ActiveContext(phase.context, conditions, faults)


def _single(context: str, description: str) -> Scenario:
    return Scenario(context, description, (Phase(0.0, context),))


def _fault(name: str, description: str, *faults: Fault) -> Scenario:
    return Scenario(name, description, (Phase(0.0, "clear"),), faults)


PRESETS: Mapping[str, Scenario] = {
    s.name: s
    for s in (
        _single("clear", "clear day, good light, dry road"),
        _single("night", "night: low ambient light, headlights, camera gain and noise up"),
        _single("fog", "fog, about 60 m visibility: camera contrast and lidar range fall"),
        _single("rain", "rain, 25 mm/h: streaks and blur, lidar dropouts, slight radar clutter"),
        _single("snow", "heavy snow, 4 mm/h, 100 m visibility: flakes in camera and lidar"),
        _single("glare", "low sun ahead: veiling glare and blooming in the camera"),
        Scenario(
            "dense_fog",
            "dense fog, about 25 m visibility: camera and lidar nearly blind, radar fine",
            (Phase(0.0, "fog", replace(CONTEXTS["fog"], fog_extinction_per_m=0.12)),),
        ),
        _fault(
            "camera_blackout",
            "clear day; camera black from 30% to 70% of the drive",
            Fault("camera_blackout", 0.3, 0.7),
        ),
        _fault(
            "camera_frozen",
            "clear day; camera frozen from 30% to 70% of the drive",
            Fault("camera_frozen", 0.3, 0.7),
        ),
        _fault(
            "lidar_partial",
            "clear day; lidar blind over a 120 degree sector ahead, 30% to 70%",
            Fault("lidar_partial", 0.3, 0.7, {"sector_deg": 120.0}),
        ),
        _fault(
            "lidar_dropout",
            "clear day; lidar clouds empty from 30% to 70%",
            Fault("lidar_dropout", 0.3, 0.7),
        ),
        _fault(
            "radar_clutter",
            "clear day; radar clutter storm (300 false targets per scan), 30% to 70%",
            Fault("radar_clutter_storm", 0.3, 0.7, {"points": 300.0}),
        ),
        _fault(
            "imu_bias_jump",
            "clear day; IMU biases jump by 0.3 m/s^2 and 0.02 rad/s at 40%",
            Fault("imu_bias_jump", 0.4, 1.0, {"accel_mps2": 0.3, "gyro_radps": 0.02}),
        ),
        _fault(
            "silent_lidar",
            "clear day; /lidar/points silent from 40% to 60%",
            Fault("silent", 0.4, 0.6, {"topic": "/lidar/points"}),
        ),
        _fault(
            "silent_camera",
            "clear day; /camera/image_raw silent from 40% to 60%",
            Fault("silent", 0.4, 0.6, {"topic": "/camera/image_raw"}),
        ),
        _fault(
            "timestamp_jitter",
            "clear day; all sensor stamps jitter by 15 ms (some arrive out of order)",
            Fault("timestamp_jitter", 0.0, 1.0, {"sigma_s": 0.015}),
        ),
        Scenario(
            "mixed_weather",
            "clear -> fog -> rain -> snow -> clear, changing every fifth of the drive",
            (
                Phase(0.0, "clear"),
                Phase(0.2, "fog"),
                Phase(0.4, "rain"),
                Phase(0.6, "snow"),
                Phase(0.8, "clear"),
            ),
        ),
        Scenario(
            "dusk",
            "low sun, then dusk falls into night",
            (Phase(0.0, "glare"), Phase(0.4, "clear"), Phase(0.7, "night")),
            ramp_s=8.0,
        ),
        Scenario(
            "mixed",
            "every context in turn, with a camera blackout and a silent lidar on the way",
            (
                Phase(0.0, "clear"),
                Phase(1 / 6, "night"),
                Phase(2 / 6, "fog"),
                Phase(3 / 6, "rain"),
                Phase(4 / 6, "snow"),
                Phase(5 / 6, "glare"),
            ),
            (
                Fault("camera_blackout", 0.25, 0.30),
                Fault("silent", 0.55, 0.60, {"topic": "/lidar/points"}),
            ),
        ),
    )
}
"""Preset scenarios by name, as `dynfusion simulate --list` prints them."""


def preset(name: str) -> Scenario:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; `dynfusion simulate --list` shows the presets"
        ) from None
