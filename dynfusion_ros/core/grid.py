"""The bird's-eye-view grid every stem, head and metric shares.

Cells are indexed ``[row, col]`` with rows along +x (forward, away from the vehicle) and
columns along +y (left), both in base_link. Keeping one definition stops encoders and
decoders from disagreeing by half a cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BevGrid:
    """A regular grid over the ground plane of base_link.

    Extents in metres, ``resolution`` in metres per cell. ``z_min``/``z_max`` bound the
    heights that rasterisers keep. Defaults: 51.2 m ahead, 25.6 m to each side, 0.4 m
    cells (128 x 128), which CPU training can afford.
    """

    x_min: float = 0.0
    x_max: float = 51.2
    y_min: float = -25.6
    y_max: float = 25.6
    resolution: float = 0.4
    z_min: float = -2.0
    z_max: float = 4.0

    def __post_init__(self) -> None:
        if not self.resolution > 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if not (self.x_max > self.x_min and self.y_max > self.y_min and self.z_max > self.z_min):
            raise ValueError(
                f"grid extents must be increasing, got x [{self.x_min}, {self.x_max}], "
                f"y [{self.y_min}, {self.y_max}], z [{self.z_min}, {self.z_max}]"
            )
        for axis, span in (("x", self.x_max - self.x_min), ("y", self.y_max - self.y_min)):
            cells = span / self.resolution
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(
                    f"{axis} extent {span} m is not a whole number of {self.resolution} m cells"
                )

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> BevGrid:
        """Build from a config mapping, rejecting unknown keys (typos) with their names."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown grid keys: {sorted(unknown)}")
        return cls(**{key: float(value) for key, value in values.items()})

    def to_mapping(self) -> dict[str, float]:
        return asdict(self)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along x, columns along y)."""
        return (
            round((self.x_max - self.x_min) / self.resolution),
            round((self.y_max - self.y_min) / self.resolution),
        )

    def cell_indices(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell (row, col) of each (N, 2+) point and a mask of points inside the grid."""
        points = np.asarray(xy)
        rows = np.floor((points[:, 0] - self.x_min) / self.resolution).astype(np.int64)
        cols = np.floor((points[:, 1] - self.y_min) / self.resolution).astype(np.int64)
        n_rows, n_cols = self.shape
        inside = (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
        return np.stack([rows, cols], axis=1), inside

    def cell_centres(self) -> np.ndarray:
        """(rows, cols, 2) array of the x, y of every cell centre."""
        n_rows, n_cols = self.shape
        xs = self.x_min + (np.arange(n_rows) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(n_cols) + 0.5) * self.resolution
        grid_x, grid_y = np.meshgrid(xs, ys, indexing="ij")
        return np.stack([grid_x, grid_y], axis=-1)

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Mask of (N, 2+) points that fall inside the grid's ground extent."""
        return self.cell_indices(xy)[1]
