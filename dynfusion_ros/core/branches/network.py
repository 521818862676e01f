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
from torch.nn import functional

from dynfusion_ros.core.branches.config import DetectorConfig
from dynfusion_ros.core.branches.rasters import LIDAR_CHANNELS, RADAR_CHANNELS
from dynfusion_ros.core.branches.registry import BRANCHES, BranchSpec

REGRESSION = ("dx", "dy", "z", "log_length", "log_width", "log_height", "sin_yaw", "cos_yaw")
HEATMAP_PRIOR = 0.01  # initial object probability per cell: keeps early focal loss sane


def _conv(inputs: int, outputs: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    )


class LidarEncoder(nn.Module):
    """Lidar raster (full grid) -> features on the head grid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv(LIDAR_CHANNELS, channels),
            _conv(channels, channels, stride=2),
            _conv(channels, channels),
        )

    def forward(self, raster: torch.Tensor) -> torch.Tensor:
        return self.layers(raster)


class RadarEncoder(nn.Module):
    """Radar raster (already on the head grid) -> features; dilated to spread sparse hits."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv(RADAR_CHANNELS, channels), _conv(channels, channels, dilation=2)
        )

    def forward(self, raster: torch.Tensor) -> torch.Tensor:
        return self.layers(raster)


class CameraEncoder(nn.Module):
    """Image -> image features -> BEV by sampling them where each head-grid cell projects
    at each lift height, then mixing the heights, the visibility mask and the range.

    Features stay at half the input resolution: depth comes from where an object's foot
    meets the ground in the image, and at 20 m one metre of depth is under one pixel of
    a 320-pixel-wide image, so every halving of the feature map costs localisation.
    """

    def __init__(self, channels: int, config: DetectorConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1))
        rows, _ = config.head_grid_shape
        ahead = config.grid.x_min + (torch.arange(rows) + 0.5) * config.head_cell_m
        self.register_buffer("range", (ahead / config.grid.x_max).view(1, 1, rows, 1))
        self.image = nn.Sequential(
            _conv(3, 16, stride=2),
            _conv(16, 24),
            _conv(24, 32, dilation=2),
            _conv(32, 32, dilation=4),
            nn.Conv2d(32, channels, 1),
        )
        heights = len(config.lift_heights_m)
        self.bev = nn.Sequential(
            nn.Conv2d(channels * heights + 2, channels, 1),
            nn.ReLU(inplace=True),
            _conv(channels, channels),
        )

    def forward(self, image: torch.Tensor, lift: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 3, H, W) uint8; ``lift`` (B, heights, rows, cols, 2) from camera_lift."""
        pixels = (image.float() / 255.0 - self.mean) / self.std
        features = self.image(pixels)
        batch, heights, rows, cols, _ = lift.shape
        sampled = functional.grid_sample(
            features, lift.reshape(batch, heights * rows, cols, 2), align_corners=False
        )
        sampled = sampled.reshape(batch, -1, heights, rows, cols).flatten(1, 2)
        visible = (lift[..., 0] > -1.5).float().mean(dim=1, keepdim=True)
        ahead = self.range.expand(batch, 1, rows, cols)
        return self.bev(torch.cat([sampled, visible, ahead], dim=1))


class CenterHead(nn.Module):
    def __init__(self, inputs: int, width: int, classes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(_conv(inputs, width), _conv(width, width, dilation=2))
        self.heatmap = nn.Conv2d(width, classes, 1)
        self.boxes = nn.Conv2d(width, len(REGRESSION), 1)
        nn.init.constant_(self.heatmap.bias, -torch.log(torch.tensor(1 / HEATMAP_PRIOR - 1)))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap logits (B, classes, rows, cols) and box regression (B, 8, rows, cols)."""
        hidden = self.trunk(features)
        return self.heatmap(hidden), self.boxes(hidden)


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
                "camera": CameraEncoder(channels["camera"], config),
                "lidar": LidarEncoder(channels["lidar"]),
                "radar": RadarEncoder(channels["radar"]),
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
