"""Boxes to head targets (training) and head outputs back to boxes (inference).

One encoding, used both ways, so training and inference cannot disagree about where a
cell's centre is or what an offset means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.head import REGRESSION
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass

MAX_OBJECTS = 96
MIN_SIGMA_CELLS = 0.5
SIGMA_PER_CELL_OF_SIZE = 0.3  # heatmap blob width grows with the object's footprint


@dataclass
class HeadTargets:
    """What one frame's heads should output: Gaussian heatmaps and, at each object's
    centre cell, its box encoding. Arrays have fixed sizes so frames batch."""

    heatmap: np.ndarray  # (classes, rows, cols) float32
    index: np.ndarray  # (MAX_OBJECTS,) int64 flat cell index
    mask: np.ndarray  # (MAX_OBJECTS,) bool, True for real objects
    regression: np.ndarray  # (MAX_OBJECTS, len(REGRESSION)) float32


def encode(truth: list[Detection], config: DetectorConfig) -> HeadTargets:
    rows, cols = config.head_grid_shape
    cell, grid = config.head_cell_m, config.grid
    heatmap = np.zeros((len(config.classes), rows, cols), dtype=np.float32)
    index = np.zeros(MAX_OBJECTS, dtype=np.int64)
    mask = np.zeros(MAX_OBJECTS, dtype=bool)
    regression = np.zeros((MAX_OBJECTS, len(REGRESSION)), dtype=np.float32)
    inside = [d for d in truth if grid.contains(np.array([[d.box.x, d.box.y]]))[0]]
    inside.sort(key=lambda d: d.box.x)  # nearest first if there are too many
    row_axis, col_axis = np.arange(rows)[:, None], np.arange(cols)[None, :]
    for slot, detection in enumerate(inside[:MAX_OBJECTS]):
        box = detection.box
        u = (box.x - grid.x_min) / cell
        v = (box.y - grid.y_min) / cell
        row, col = min(int(u), rows - 1), min(int(v), cols - 1)
        sigma = max(MIN_SIGMA_CELLS, SIGMA_PER_CELL_OF_SIZE * max(box.length, box.width) / cell)
        blob = np.exp(-((row_axis + 0.5 - u) ** 2 + (col_axis + 0.5 - v) ** 2) / (2 * sigma**2))
        blob[row, col] = 1.0
        channel = heatmap[int(detection.object_class)]
        np.maximum(channel, blob, out=channel)
        index[slot], mask[slot] = row * cols + col, True
        regression[slot] = (
            u - row,
            v - col,
            box.z,
            np.log(box.length),
            np.log(box.width),
            np.log(box.height),
            np.sin(box.yaw),
            np.cos(box.yaw),
        )
    return HeadTargets(heatmap, index, mask, regression)


def decode(
    heatmap_logits: torch.Tensor,
    boxes: torch.Tensor,
    config: DetectorConfig,
    score_threshold: float = 0.05,
) -> list[Detection]:
    """Detections of one frame from a head's (classes, rows, cols) and (8, rows, cols):
    local maxima of the heatmap above ``score_threshold``, best ``max_detections``."""
    scores = torch.sigmoid(heatmap_logits.float())
    peaks = functional.max_pool2d(scores[None], 3, stride=1, padding=1)[0] == scores
    scores = torch.where(peaks, scores, torch.zeros_like(scores))
    _, rows, cols = scores.shape
    flat = scores.reshape(-1)
    count = min(config.max_detections, flat.numel())
    top, where = torch.topk(flat, count)
    keep = top >= score_threshold
    top, where = top[keep].numpy(), where[keep].numpy()
    class_index, cell = np.divmod(where, rows * cols)
    row, col = np.divmod(cell, cols)
    values = boxes.float().reshape(len(REGRESSION), -1)[:, cell].numpy().astype(np.float64)
    dx, dy, z, log_l, log_w, log_h, sin_yaw, cos_yaw = values
    cell_m, grid = config.head_cell_m, config.grid
    x = grid.x_min + (row + np.clip(dx, 0.0, 1.0)) * cell_m
    y = grid.y_min + (col + np.clip(dy, 0.0, 1.0)) * cell_m
    sizes = np.exp(np.clip(np.stack([log_l, log_w, log_h]), -3.0, 3.0))
    yaw = np.arctan2(sin_yaw, cos_yaw)
    # Python floats, not numpy scalars: they are read one by one from here on (fusion,
    # messages), where a numpy scalar costs several times a float
    columns = zip(x.tolist(), y.tolist(), z.tolist(), *sizes.tolist(), yaw.tolist(), strict=True)
    return [
        Detection(ObjectClass(c), score, Box3D(*box))
        for c, score, box in zip(class_index.tolist(), top.tolist(), columns, strict=True)
    ]
