"""Branch-training data read from labelled bags with the nodes' conversions and the
stems' own input code, held in memory as compact arrays (uint8 images, float16 rasters).

A 30-minute training suite is a few gigabytes this way, and every epoch after the first
read costs no decoding at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros.core.detector.boxes import encode
from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.inputs import LiftCache, stem_input
from dynfusion_ros.core.detector.levels import STEMS
from dynfusion_ros.core.detector.rasters import LIDAR_CHANNELS, RADAR_CHANNELS
from dynfusion_ros.eval.detection_metrics import ScoredFrame
from dynfusion_ros.eval.trajectory import TruePoses
from dynfusion_ros.ros.bag_frames import LabelledFrame, bag_duration_frames, read_frames


@dataclass
class BranchDataset:
    """Frame ``i`` of every array belongs together. ``available[i, s]``: stem ``STEMS[s]``
    had usable input; its arrays are zeros otherwise. ``lifts[lift_index[i]]`` is the
    frame's camera lift grid."""

    camera: np.ndarray
    lift_index: np.ndarray
    lifts: list[np.ndarray]
    lidar: np.ndarray
    radar: np.ndarray
    available: np.ndarray
    heatmap: np.ndarray
    index: np.ndarray
    mask: np.ndarray
    regression: np.ndarray
    scored: list[ScoredFrame]  # ground truth and context of every frame
    bag: np.ndarray  # (N,) which of the bags read the frame came from
    number: np.ndarray  # (N,) the frame's position in its bag (every frame counted)
    stamp_ns: np.ndarray  # (N,)
    pose: np.ndarray  # (N, 3) true x, y, yaw of base_link in odom; NaN where the bag has none

    def __len__(self) -> int:
        return len(self.available)

    def earlier(self, index: int, frames_back: int) -> int | None:
        """The frame ``frames_back`` frames before frame ``index`` of the same bag, when
        it was read (and kept) too."""
        if not hasattr(self, "_positions"):
            self._positions = {
                (int(b), int(n)): i
                for i, (b, n) in enumerate(zip(self.bag, self.number, strict=True))
            }
        return self._positions.get((int(self.bag[index]), int(self.number[index]) - frames_back))

    def subset(self, chosen: np.ndarray) -> BranchDataset:
        fields = {}
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if name == "lifts":
                fields[name] = value
            elif name == "scored":
                fields[name] = [value[i] for i in chosen]
            else:
                fields[name] = value[chosen]
        return BranchDataset(**fields)


class _Builder:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.lift_cache = LiftCache(config)
        self.lift_ids: dict[int, int] = {}
        self.lifts: list[np.ndarray] = []
        self.rows: dict[str, list] = {
            name: []
            for name in (
                "camera",
                "lift_index",
                "lidar",
                "radar",
                "available",
                "heatmap",
                "index",
                "mask",
                "regression",
                "scored",
                "bag",
                "number",
                "stamp_ns",
                "pose",
            )
        }

    def add(self, labelled: LabelledFrame, bag: int, number: int, pose: np.ndarray) -> None:
        config, rows = self.config, self.rows
        grid_rows, grid_cols = config.grid.shape
        head_rows, head_cols = config.head_grid_shape
        width, height = config.camera_input
        zeros = {
            "camera": np.zeros((3, height, width), np.uint8),
            "lidar": np.zeros((LIDAR_CHANNELS, grid_rows, grid_cols), np.float16),
            "radar": np.zeros((RADAR_CHANNELS, head_rows, head_cols), np.float16),
        }
        available = []
        lift_id = 0
        for stem in STEMS:
            prepared = stem_input(labelled.frame, stem, config, self.lift_cache)
            ok = not prepared.unavailable
            available.append(ok)
            rows[stem.value].append(
                prepared.arrays[stem.value].astype(zeros[stem.value].dtype)
                if ok
                else zeros[stem.value]
            )
            if ok and "camera_lift" in prepared.arrays:
                lift_id = self._lift_id(prepared.arrays["camera_lift"])
        rows["lift_index"].append(lift_id)
        rows["available"].append(available)
        targets = encode(labelled.truth, config)
        rows["heatmap"].append(targets.heatmap.astype(np.float16))
        rows["index"].append(targets.index)
        rows["mask"].append(targets.mask)
        rows["regression"].append(targets.regression)
        rows["scored"].append(ScoredFrame([], labelled.truth, labelled.context))
        rows["bag"].append(bag)
        rows["number"].append(number)
        rows["stamp_ns"].append(labelled.frame.stamp_ns)
        rows["pose"].append(pose)

    def _lift_id(self, lift: np.ndarray) -> int:
        key = id(lift)  # the cache hands back the same array for the same camera
        if key not in self.lift_ids:
            self.lift_ids[key] = len(self.lifts)
            self.lifts.append(lift)
        return self.lift_ids[key]

    def build(self) -> BranchDataset:
        rows = self.rows
        if not rows["available"]:
            raise ValueError("no labelled frames in the given bags")
        lifts = self.lifts or [
            np.zeros((len(self.config.lift_heights_m), *self.config.head_grid_shape, 2), np.float32)
        ]
        arrays = {name: np.stack(values) for name, values in rows.items() if name != "scored"}
        return BranchDataset(lifts=lifts, scored=rows["scored"], **arrays)


def load_dataset(
    bags: Sequence[Path],
    config: DetectorConfig,
    *,
    every: int = 1,
    progress: bool = True,
    values: dict | None = None,
) -> BranchDataset:
    """Every ``every``-th frame of each bag (consecutive frames at 10 Hz are near-copies),
    read with ``values`` (the sensor parameters; the defaults when None)."""
    builder = _Builder(config)
    for bag_index, bag in enumerate(bags):
        poses = TruePoses(Path(bag))
        total = bag_duration_frames(Path(bag), values)
        frames = read_frames(Path(bag), values=values)
        bar = tqdm(
            frames,
            total=total,
            desc=Path(bag).name,
            unit="frame",
            disable=not progress,
            leave=False,
        )
        for number, labelled in enumerate(bar):
            if number % every == 0 and labelled.scored:
                builder.add(labelled, bag_index, number, poses.at(labelled.frame.stamp_ns))
    return builder.build()
