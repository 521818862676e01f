"""The detection head: per head-grid cell, a heatmap per class and a box.

The box is the centre's offset inside the cell (in cells), its height z (m), log
length/width/height (log m) and the yaw as (sin, cos); ``REGRESSION`` names those
channels in order.
"""

from __future__ import annotations

import torch
from torch import nn

from dynfusion_ros.core.detector.stems import conv3x3

REGRESSION = ("dx", "dy", "z", "log_length", "log_width", "log_height", "sin_yaw", "cos_yaw")
HEATMAP_PRIOR = 0.01  # initial object probability per cell: keeps early focal loss sane


class CenterHead(nn.Module):
    def __init__(self, inputs: int, width: int, classes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(conv3x3(inputs, width), conv3x3(width, width, dilation=2))
        self.heatmap = nn.Conv2d(width, classes, 1)
        self.boxes = nn.Conv2d(width, len(REGRESSION), 1)
        nn.init.constant_(self.heatmap.bias, -torch.log(torch.tensor(1 / HEATMAP_PRIOR - 1)))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap logits (B, classes, rows, cols) and box regression (B, 8, rows, cols)."""
        hidden = self.trunk(features)
        return self.heatmap(hidden), self.boxes(hidden)
