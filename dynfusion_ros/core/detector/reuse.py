"""Temporal reuse: a stem that does not run this frame lends its last BEV features,
moved to where they lie now by the ego motion since.

Motion is planar (x, y, yaw of base_link in odom): the grid is the ground plane, and
roll and pitch between two frames a few tenths of a second apart move a BEV cell by far
less than its 0.8 m. Cells that come from outside the old grid read zeros, and the age
of what was reused goes to the fusion with it, so the head learns how far to trust it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from dynfusion_ros.core.grid import BevGrid


def planar_pose(position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """(x, y, yaw) of a pose given as a position and an (x, y, z, w) quaternion."""
    x, y, z, w = (float(v) for v in orientation)
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([float(position[0]), float(position[1]), yaw])


def relative_motion(then: np.ndarray, now: np.ndarray) -> np.ndarray:
    """(..., 3): the pose ``now`` seen from the pose ``then``, both (..., 3) (x, y, yaw)."""
    then, now = np.asarray(then, dtype=np.float64), np.asarray(now, dtype=np.float64)
    dx, dy = now[..., 0] - then[..., 0], now[..., 1] - then[..., 1]
    cos, sin = np.cos(then[..., 2]), np.sin(then[..., 2])
    dyaw = np.arctan2(np.sin(now[..., 2] - then[..., 2]), np.cos(now[..., 2] - then[..., 2]))
    return np.stack([cos * dx + sin * dy, -sin * dx + cos * dy, dyaw], axis=-1)


def warp(features: torch.Tensor, motion: torch.Tensor, grid: BevGrid) -> torch.Tensor:
    """Features (B, C, rows, cols) on ``grid`` at an earlier pose, resampled on the grid at
    the pose ``motion`` (B, 3) from it (``relative_motion``)."""
    rows, cols = features.shape[-2:]
    xs = (
        grid.x_min
        + (torch.arange(rows, dtype=features.dtype) + 0.5) * (grid.x_max - grid.x_min) / rows
    )
    ys = (
        grid.y_min
        + (torch.arange(cols, dtype=features.dtype) + 0.5) * (grid.y_max - grid.y_min) / cols
    )
    cell_x, cell_y = torch.meshgrid(xs, ys, indexing="ij")
    motion = motion.to(features.dtype)
    cos, sin = torch.cos(motion[:, 2]).view(-1, 1, 1), torch.sin(motion[:, 2]).view(-1, 1, 1)
    then_x = cos * cell_x - sin * cell_y + motion[:, 0].view(-1, 1, 1)
    then_y = sin * cell_x + cos * cell_y + motion[:, 1].view(-1, 1, 1)
    sample = torch.stack(
        [
            2.0 * (then_y - grid.y_min) / (grid.y_max - grid.y_min) - 1.0,
            2.0 * (then_x - grid.x_min) / (grid.x_max - grid.x_min) - 1.0,
        ],
        dim=-1,
    )
    return functional.grid_sample(features, sample, align_corners=False, padding_mode="zeros")


@dataclass
class Remembered:
    features: torch.Tensor  # (1, C, rows, cols)
    pose: np.ndarray  # (x, y, yaw) in odom when they were computed
    stamp_ns: int


class FeatureMemory:
    """The last features of each stem, with the pose and stamp they were computed at."""

    def __init__(self, grid: BevGrid, max_age_s: float) -> None:
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.grid, self.max_age_s = grid, max_age_s
        self.remembered: dict[str, Remembered] = {}

    def reset(self) -> None:
        self.remembered.clear()

    def remember(self, stem: str, features: torch.Tensor, pose: np.ndarray, stamp_ns: int) -> None:
        self.remembered[stem] = Remembered(features, np.asarray(pose, dtype=np.float64), stamp_ns)

    def recall(
        self, stem: str, pose: np.ndarray, stamp_ns: int
    ) -> tuple[torch.Tensor, float] | str:
        """The stem's last features warped to ``pose`` and their age in seconds, or why
        there are none to reuse."""
        last = self.remembered.get(stem)
        if last is None:
            return f"no earlier {stem} features to reuse"
        age_s = (stamp_ns - last.stamp_ns) * 1e-9
        if not 0.0 < age_s <= self.max_age_s:
            limit = f"(0, {self.max_age_s:g}] s"
            return f"earlier {stem} features are {age_s:.2f} s old (reuse takes {limit})"
        motion = torch.as_tensor(
            relative_motion(last.pose, pose)[None], device=last.features.device
        )
        return warp(last.features, motion, self.grid), age_s
