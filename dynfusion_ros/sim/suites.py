"""Named sets of simulated drives: what branches and the gate train on, and what they are
scored on.

Training and held-out drives use disjoint seeds (every held-out seed is 1000 or more,
every training seed below 1000), so a held-out drive's world, traffic and noise were
never seen in training. Each drive is written to ``<out>/<name>`` by
``dynfusion simulate --suite``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dynfusion_ros.sim.scenario import PRESETS

HELD_OUT_SEED_MIN = 1000


@dataclass(frozen=True)
class SuiteDrive:
    preset: str
    seed: int
    duration_s: float

    @property
    def name(self) -> str:
        return f"{self.preset}_s{self.seed}"


_SINGLE_CONTEXTS = ("clear", "night", "fog", "rain", "snow", "glare")
_FAULTS = (
    "camera_blackout",
    "camera_frozen",
    "lidar_partial",
    "lidar_dropout",
    "radar_clutter",
    "silent_lidar",
    "silent_camera",
    "timestamp_jitter",
)


def _train() -> tuple[SuiteDrive, ...]:
    drives = [
        SuiteDrive(context, seed, 20.0)
        for context in (*_SINGLE_CONTEXTS, "dense_fog")
        for seed in (1, 2, 3)
    ]
    drives += [SuiteDrive(name, 4, 30.0) for name in ("mixed", "mixed_weather", "dusk")]
    drives += [SuiteDrive(fault, 5, 20.0) for fault in _FAULTS]
    return tuple(drives)


def _held_out() -> tuple[SuiteDrive, ...]:
    drives = [SuiteDrive(context, 1001, 40.0) for context in (*_SINGLE_CONTEXTS, "dense_fog")]
    drives.append(SuiteDrive("mixed", 1002, 60.0))
    faults = ("camera_blackout", "lidar_dropout", "lidar_partial", "radar_clutter")
    return (*drives, *(SuiteDrive(fault, 1003, 20.0) for fault in faults))


def _held_out_60s() -> tuple[SuiteDrive, ...]:
    return tuple(SuiteDrive(drive.preset, drive.seed, 60.0) for drive in _held_out())


SUITES: Mapping[str, tuple[SuiteDrive, ...]] = {
    "train": _train(),
    "heldout": _held_out(),
    "heldout_60s": _held_out_60s(),
    "tiny": (SuiteDrive("clear", 7, 2.0), SuiteDrive("fog", 8, 2.0)),
}
"""``train``: every context (three seeds each) and every fault; ``heldout``: every
context from unseen seeds, a 60 s mixed drive and the faults that blind one sensor;
``heldout_60s``: the same drives, 60 s each (the odometry's targets are held to 60 s
drives: drift needs distance to show);
``tiny``: two 2 s drives for tests."""


def suite(name: str) -> tuple[SuiteDrive, ...]:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}") from None


def _check() -> None:
    for name, drives in SUITES.items():
        for drive in drives:
            if drive.preset not in PRESETS:
                raise ValueError(f"suite {name}: unknown preset {drive.preset!r}")
            held_out_seed = drive.seed >= HELD_OUT_SEED_MIN
            if held_out_seed != name.startswith("heldout"):
                raise ValueError(f"suite {name}: seed {drive.seed} crosses the held-out line")


_check()
