"""Which branches exist, which stems each needs, and how wide its head is.

A stem encodes one modality into BEV features and runs at most once per frame, however
many chosen branches read it; a branch is a detection head over one stem or over stems
concatenated (early fusion). The gate reads this table to price a selection: the union
of its stems plus its heads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dynfusion_ros.core.types import Modality

STEMS: tuple[Modality, ...] = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)


@dataclass(frozen=True)
class BranchSpec:
    name: str
    stems: tuple[Modality, ...]
    head_width: int  # channels of the head's hidden layers

    @property
    def stem_names(self) -> tuple[str, ...]:
        return tuple(stem.value for stem in self.stems)


BRANCHES: Mapping[str, BranchSpec] = {
    spec.name: spec
    for spec in (
        BranchSpec("camera", (Modality.CAMERA,), 32),
        BranchSpec("lidar", (Modality.LIDAR,), 32),
        BranchSpec("radar", (Modality.RADAR,), 16),
        BranchSpec("camera_lidar", (Modality.CAMERA, Modality.LIDAR), 32),
        BranchSpec("camera_radar", (Modality.CAMERA, Modality.RADAR), 32),
        BranchSpec("lidar_radar", (Modality.LIDAR, Modality.RADAR), 32),
    )
}
"""Every branch, by name: single-sensor branches first, then the early-fusion ones."""


def branch(name: str) -> BranchSpec:
    try:
        return BRANCHES[name]
    except KeyError:
        raise ValueError(f"unknown branch {name!r}; known: {', '.join(BRANCHES)}") from None


def stems_for(branch_names: Iterable[str]) -> tuple[Modality, ...]:
    """The stems a set of branches needs, each once, in stem order."""
    needed = {stem for name in branch_names for stem in branch(name).stems}
    return tuple(stem for stem in STEMS if stem in needed)
