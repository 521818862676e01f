"""The fused detector: the stems (``stems.py``), a fusion that takes any subset of them
at any level, and one shared head.

Each option (a stem at a level) has its own 1 x 1 adapter onto a common width, so an
early exit's or a reused map's features can mean something else than the full stem's
(a reused map's adapter also reads its age). Per cell, the present stems are mixed by a
softmax over the stems that ran: weights that always sum to one whatever is missing,
the presence-normalised fusion of UniBEV and MetaBEV, and the fused map is shifted by
what ran at which level and age, so the head knows. One head reads the result, so a
score means the same whichever configuration produced it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.head import CenterHead
from dynfusion_ros.core.detector.levels import OPTIONS, REUSE, STEM_LEVELS, STEMS
from dynfusion_ros.core.detector.stems import CameraStem, LidarStem, RadarStem

AGE_SCALE_S = 1.0  # a reused map's age enters the network in these units
OFF = -1  # a stem's level index where it did not contribute

STEM_NAMES = tuple(stem.value for stem in STEMS)
LEVELS = {stem.value: STEM_LEVELS[stem] for stem in STEMS}


class Fusion(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        width = config.fused_channels
        self.adapters = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Conv2d(config.stem_channels[o.stem.value] + (o.level == REUSE), width, 1),
                    nn.ReLU(inplace=True),
                )
                for name, o in OPTIONS.items()
            }
        )
        self.cell_logits = nn.ModuleDict({stem: nn.Conv2d(width, 1, 1) for stem in STEM_NAMES})
        self.condition = nn.Linear(len(OPTIONS) + len(STEM_NAMES), width)

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        levels: Mapping[str, torch.Tensor],
        ages: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """``features[stem]`` (B, C, rows, cols); ``levels[stem]`` (B,) index into the
        stem's levels, ``OFF`` where it did not contribute; ``ages[stem]`` (B,) seconds
        (reused maps only). A stem missing from ``features`` is off in every frame."""
        adapted, logits, present = [], [], []
        indicator = []
        for stem in STEM_NAMES:
            level = levels.get(stem)
            batch = next(iter(features.values())).shape[0]
            if level is None:
                level = torch.full((batch,), OFF, dtype=torch.long)
            age = ages.get(stem, torch.zeros(batch))
            indicator += [level == index for index in range(len(LEVELS[stem]))]
            indicator.append(age * (level == LEVELS[stem].index(REUSE)))
            if stem not in features:
                continue
            mixed = None
            for index, name in enumerate(LEVELS[stem]):
                chosen = level == index
                if not bool(chosen.any()):
                    continue
                inputs = features[stem]
                if name == REUSE:
                    plane = (age / AGE_SCALE_S).view(-1, 1, 1, 1).expand(-1, 1, *inputs.shape[-2:])
                    inputs = torch.cat([inputs, plane.to(inputs.dtype)], dim=1)
                option = stem if index == 0 else f"{stem}_{name}"
                out = self.adapters[option](inputs)
                chosen = chosen.view(-1, 1, 1, 1).to(out.dtype)
                mixed = out * chosen if mixed is None else mixed + out * chosen
            if mixed is None:
                continue
            adapted.append(mixed)
            logits.append(self.cell_logits[stem](mixed))
            present.append((level != OFF).view(-1, 1, 1, 1))
        stacked_logits = torch.cat(logits, dim=1)
        mask = torch.cat(present, dim=1)
        stacked_logits = stacked_logits.masked_fill(~mask, torch.finfo(stacked_logits.dtype).min)
        weights = torch.softmax(stacked_logits, dim=1) * mask
        fused = sum(weights[:, i : i + 1] * a for i, a in enumerate(adapted))
        condition = torch.stack([v.to(fused.dtype) for v in indicator], dim=1)
        return torch.relu(fused + self.condition(condition)[:, :, None, None])


class FusedDetector(nn.Module):
    """Every stem, the fusion and the head; see the module docstring."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.stem_channels
        self.stems = nn.ModuleDict(
            {
                "camera": CameraStem(channels["camera"], config),
                "lidar": LidarStem(channels["lidar"]),
                "radar": RadarStem(channels["radar"]),
            }
        )
        self.fusion = Fusion(config)
        self.head = CenterHead(config.fused_channels, config.head_width, len(config.classes))

    def stem(self, name: str, inputs: Mapping[str, torch.Tensor], level: str) -> torch.Tensor:
        """One stem's features at a level that runs it (not reuse)."""
        if name == "camera":
            return self.stems["camera"](inputs["camera"], inputs["camera_lift"], level)
        return self.stems[name](inputs[name], level)

    def detect(
        self,
        features: Mapping[str, torch.Tensor],
        levels: Mapping[str, torch.Tensor],
        ages: Mapping[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap logits and boxes from whatever stems contributed (``Fusion.forward``)."""
        return self.head(self.fusion(features, levels, ages))
