"""The learned part of the branches: one encoder per stem, one centre-heatmap head per
branch. Everything meets on the head grid (the BEV grid coarsened by ``head_stride``).

Heads predict, per head-grid cell, a heatmap per class and a box: the centre's offset
inside the cell (in cells), its height z (m), log length/width/height (log m) and the
yaw as (sin, cos). ``REGRESSION`` names those channels in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from dynfusion_ros.core.branches.registry import BRANCHES, BranchSpec
from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.head import CenterHead
from dynfusion_ros.core.detector.rasters import LIDAR_CHANNELS
from dynfusion_ros.core.detector.stems import CameraStem, RadarStem, conv3x3


class LidarEncoder(nn.Module):
    """Lidar raster (full grid) -> features on the head grid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv3x3(LIDAR_CHANNELS, channels),
            conv3x3(channels, channels, stride=2),
            conv3x3(channels, channels),
        )

    def forward(self, raster: torch.Tensor) -> torch.Tensor:
        return self.layers(raster)


class BranchNetwork(nn.Module):
    """All stems and all branch heads; run any subset, each needed stem once."""

    def __init__(
        self, config: DetectorConfig, branches: Mapping[str, BranchSpec] = BRANCHES
    ) -> None:
        super().__init__()
        self.config, self.specs = config, dict(branches)
        channels = config.stem_channels
        self.stems = nn.ModuleDict(
            {
                "camera": CameraStem(channels["camera"], config),
                "lidar": LidarEncoder(channels["lidar"]),
                "radar": RadarStem(channels["radar"]),
            }
        )
        self.heads = nn.ModuleDict(
            {
                name: CenterHead(
                    sum(channels[stem] for stem in spec.stem_names),
                    spec.head_width,
                    len(config.classes),
                )
                for name, spec in self.specs.items()
            }
        )

    def stem(self, name: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if name == "camera":
            return self.stems["camera"](inputs["camera"], inputs["camera_lift"])
        return self.stems[name](inputs[name])

    def head(self, name: str, features: Mapping[str, torch.Tensor]):
        spec = self.specs[name]
        return self.heads[name](torch.cat([features[stem] for stem in spec.stem_names], dim=1))

    def forward(self, inputs: Mapping[str, torch.Tensor], branches: Iterable[str]):
        branches = list(branches)
        needed = {stem for name in branches for stem in self.specs[name].stem_names}
        features = {stem: self.stem(stem, inputs) for stem in needed}
        return {name: self.head(name, features) for name in branches}
