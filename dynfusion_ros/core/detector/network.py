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
        (reused maps only). A stem missing from ``features`` is off in every frame.

        Masks are applied only where the batch's frames differ (training mixes levels
        per frame). A node runs one frame of one configuration: there, every mask would
        be all ones, and at batch 1 such elementwise passes over the map cost more than
        the convolutions (they were half the fusion's time)."""
        batch = next(iter(features.values())).shape[0]
        adapted, present, indicator = {}, [], []
        for stem in STEM_NAMES:
            level = levels.get(stem)
            if level is None:
                level = torch.full((batch,), OFF, dtype=torch.long)
            age = ages.get(stem, torch.zeros(batch))
            indicator += [level == index for index in range(len(LEVELS[stem]))]
            indicator.append(age * (level == LEVELS[stem].index(REUSE)))
            if stem not in features:
                continue
            mixed = self._adapt(stem, features[stem], level, age)
            if mixed is None:
                continue
            adapted[stem] = mixed
            present.append(level != OFF)
        fused = self._mix(adapted, torch.stack(present, dim=1))
        condition = torch.stack([v.to(fused.dtype) for v in indicator], dim=1)
        return torch.relu(fused + self.condition(condition)[:, :, None, None])

    def _adapt(
        self, stem: str, inputs: torch.Tensor, level: torch.Tensor, age: torch.Tensor
    ) -> torch.Tensor | None:
        """The stem's map through the adapter of each frame's level (zeros where off)."""
        mixed = None
        for index, name in enumerate(LEVELS[stem]):
            chosen = level == index
            if not bool(chosen.any()):
                continue
            values = inputs
            if name == REUSE:
                plane = (age / AGE_SCALE_S).view(-1, 1, 1, 1).expand(-1, 1, *inputs.shape[-2:])
                values = torch.cat([inputs, plane.to(inputs.dtype)], dim=1)
            out = self.adapters[stem if index == 0 else f"{stem}_{name}"](values)
            if bool(chosen.all()):
                return out
            chosen = chosen.view(-1, 1, 1, 1).to(out.dtype)
            mixed = out * chosen if mixed is None else mixed + out * chosen
        return mixed

    def _mix(self, adapted: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Per cell, the softmax-weighted sum of the stems present in each frame."""
        maps = list(adapted.values())
        if len(maps) == 1:
            return maps[0]  # one stem: its weight is 1 wherever it is present (else 0)
        stacked = torch.cat([self.cell_logits[stem](a) for stem, a in adapted.items()], dim=1)
        if bool(present.all()):
            weights = torch.softmax(stacked, dim=1)
        else:
            mask = present[:, :, None, None]
            stacked = stacked.masked_fill(~mask, torch.finfo(stacked.dtype).min)
            weights = torch.softmax(stacked, dim=1) * mask
        return sum(weights[:, i : i + 1] * a for i, a in enumerate(maps))


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
