"""CenterNet's losses: a penalty-reduced focal loss on the class heatmaps and an L1 loss
on the box encoding at each object's centre cell, summed per frame so that callers can
weigh frames (a frame a configuration could not see is left out)."""

from __future__ import annotations

import torch
from torch.nn import functional


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame summed focal loss (B,) and positive-cell count (B,)."""
    prediction = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target >= 1.0
    positive_term = torch.log(prediction) * (1 - prediction) ** 2
    negative_term = torch.log(1 - prediction) * prediction**2 * (1 - target) ** 4
    per_cell = torch.where(positive, positive_term, negative_term)
    return -per_cell.flatten(1).sum(dim=1), positive.flatten(1).sum(dim=1).float()


def regression_loss(
    boxes: torch.Tensor, index, mask, regression
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame summed L1 box loss at object centres (B,) and object count (B,)."""
    flat = boxes.flatten(2)  # (B, 8, cells)
    picked = torch.gather(flat, 2, index[:, None, :].expand(-1, flat.shape[1], -1))
    error = functional.l1_loss(picked.transpose(1, 2), regression, reduction="none").sum(dim=2)
    return (error * mask).sum(dim=1), mask.sum(dim=1)
