"""Everything a set of branch weights depends on, saved beside them as JSON.

If any of this changes, old weights no longer mean what they did, so loading compares
the saved config with the code's and names every difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import ObjectClass

FORMAT_VERSION = 1

LIDAR_HEIGHT_EDGES_M = (0.3, 1.0, 2.0)
"""Lidar points are counted in height slices split here (base_link z, ground near 0)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture, grid, classes and input normalisation of the branch network.

    ``head_stride``: heads and the camera lift work on the grid coarsened by this factor
    (0.8 m cells by default). ``camera_input``: (width, height) the image is resized to.
    ``lift_heights_m``: heights above the ground at which each BEV cell is projected into
    the image to gather camera features. Image normalisation is per RGB channel on [0, 1].
    ``fused_channels``: width of the fused BEV map the one head reads; ``head_width``:
    channels of that head's hidden layers.
    """

    grid: BevGrid = field(default_factory=BevGrid)
    classes: tuple[str, ...] = tuple(c.label for c in ObjectClass)
    head_stride: int = 2
    camera_input: tuple[int, int] = (320, 192)
    lift_heights_m: tuple[float, ...] = (0.25, 0.75, 1.25, 1.75)
    stem_channels: Mapping[str, int] = field(
        default_factory=lambda: {"camera": 32, "lidar": 32, "radar": 16}
    )
    image_mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    lidar_intensity_scale: float = 255.0
    radar_rcs_offset_dbsm: float = 10.0
    radar_rcs_scale_db: float = 30.0
    radar_velocity_scale_mps: float = 15.0
    max_detections: int = 64
    fused_channels: int = 48
    head_width: int = 32
    version: int = FORMAT_VERSION

    @property
    def head_grid_shape(self) -> tuple[int, int]:
        rows, cols = self.grid.shape
        return rows // self.head_stride, cols // self.head_stride

    @property
    def head_cell_m(self) -> float:
        return self.grid.resolution * self.head_stride

    def to_mapping(self) -> dict:
        values = asdict(self)
        values["grid"] = self.grid.to_mapping()
        values["stem_channels"] = dict(self.stem_channels)
        return values

    @classmethod
    def from_mapping(cls, values: Mapping) -> DetectorConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        values = dict(values)
        if "grid" in values:
            values["grid"] = BevGrid.from_mapping(values["grid"])
        for key in ("classes", "camera_input", "lift_heights_m", "image_mean", "image_std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
