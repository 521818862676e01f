"""The stems: one encoder per modality from its input to BEV features on the head grid
(the BEV grid coarsened by ``head_stride``), each runnable at its levels (``levels.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.levels import EARLY, FULL, HALF
from dynfusion_ros.core.detector.rasters import LIDAR_CHANNELS, RADAR_CHANNELS


def conv3x3(inputs: int, outputs: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    )


def _refuse(stem: str, level: str) -> ValueError:
    return ValueError(f"the {stem} stem has no level {level!r}")


class LidarStem(nn.Module):
    """Lidar raster (full grid) -> features on the head grid.

    ``early`` exits after the first two layers (the full-grid layer and the stride-2 one):
    the last two, each as dear as the second, are what it saves.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Sequential(
            conv3x3(LIDAR_CHANNELS, channels), conv3x3(channels, channels, stride=2)
        )
        self.rest = nn.Sequential(
            conv3x3(channels, channels), conv3x3(channels, channels, dilation=2)
        )

    def forward(self, raster: torch.Tensor, level: str = FULL) -> torch.Tensor:
        if level not in (FULL, EARLY):
            raise _refuse("lidar", level)
        features = self.first(raster)
        return features if level == EARLY else self.rest(features)


class RadarStem(nn.Module):
    """Radar raster (already on the head grid) -> features; dilated to spread sparse hits."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv3x3(RADAR_CHANNELS, channels), conv3x3(channels, channels, dilation=2)
        )

    def forward(self, raster: torch.Tensor, level: str = FULL) -> torch.Tensor:
        if level != FULL:
            raise _refuse("radar", level)
        return self.layers(raster)


class CameraStem(nn.Module):
    """Image -> image features -> BEV by sampling them where each head-grid cell projects
    at each lift height, then mixing the heights, the visibility mask and the range.

    Features stay at half the input resolution: depth comes from where an object's foot
    meets the ground in the image, and at 20 m one metre of depth is under one pixel of
    a 320-pixel-wide image, so every halving of the feature map costs localisation.
    ``half`` pays that for a quarter of the pixels: the image is averaged 2 x 2 in the
    network (so training and inference halve it the same way) and the lift, in
    normalised image coordinates, samples the smaller feature map at the same places.
    """

    def __init__(self, channels: int, config: DetectorConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1))
        rows, _ = config.head_grid_shape
        ahead = config.grid.x_min + (torch.arange(rows) + 0.5) * config.head_cell_m
        self.register_buffer("range", (ahead / config.grid.x_max).view(1, 1, rows, 1))
        self.image = nn.Sequential(
            conv3x3(3, 16, stride=2),
            conv3x3(16, 24),
            conv3x3(24, 32, dilation=2),
            conv3x3(32, 32, dilation=4),
            nn.Conv2d(32, channels, 1),
        )
        heights = len(config.lift_heights_m)
        self.bev = nn.Sequential(
            nn.Conv2d(channels * heights + 2, channels, 1),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
        )

    def forward(self, image: torch.Tensor, lift: torch.Tensor, level: str = FULL) -> torch.Tensor:
        """``image`` (B, 3, H, W) uint8; ``lift`` (B, heights, rows, cols, 2) from camera_lift."""
        if level not in (FULL, HALF):
            raise _refuse("camera", level)
        pixels = (image.float() / 255.0 - self.mean) / self.std
        if level == HALF:
            pixels = functional.avg_pool2d(pixels, 2)
        features = self.image(pixels)
        batch, heights, rows, cols, _ = lift.shape
        sampled = functional.grid_sample(
            features, lift.reshape(batch, heights * rows, cols, 2), align_corners=False
        )
        sampled = sampled.reshape(batch, -1, heights, rows, cols).flatten(1, 2)
        visible = (lift[..., 0] > -1.5).float().mean(dim=1, keepdim=True)
        ahead = self.range.expand(batch, 1, rows, cols)
        return self.bev(torch.cat([sampled, visible, ahead], dim=1))
