"""Detections and ground truth in the nuScenes detection results format, so anyone can
score our output with nuscenes-devkit alone (``tools/nuscenes_devkit_score.py`` does).

One document per file: ``{"meta": {...}, "results": {sample_token: [box, ...]}}`` with
the fields of the devkit's ``DetectionBox``. How our frames map onto it:

- ``sample_token`` is the frame's stamp in nanoseconds, as a string; with frames of
  several bags (simulated drives share one clock) it is ``<bag>/<stamp>``. Every frame
  scored is present, with an empty list where it has no box.
- Boxes are in the frame's ``base_link`` (the ego frame), so ``ego_translation`` equals
  ``translation``. nuScenes puts boxes in a global frame; centre distances and yaw
  differences within one sample, all that the metrics use, are the same in either.
- Only the boxes our metrics count are written: centre on the BEV grid and within
  nuScenes' class range (``detection_metrics.counted``), so the devkit's range filter
  finds nothing to remove and its figures equal ours.
- ``size`` is (width, length, height); ``rotation`` the yaw about +z as a (w, x, y, z)
  quaternion; ``velocity`` is (0, 0) where a box has none (our detector estimates none,
  so the devkit's velocity error means nothing); ``attribute_name`` is empty;
  ``num_pts`` is -1 (not counted; nuScenes drops ground truth with no lidar or radar
  point, we keep it). Ground truth has ``detection_score`` -1, as in the devkit.
- ``cyclist`` is exported as nuScenes' ``bicycle``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dynfusion_ros import __version__
from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import Detection, ObjectClass
from dynfusion_ros.eval.detection_metrics import ScoredFrame, counted

NUSCENES_NAME: Mapping[ObjectClass, str] = {
    ObjectClass.CAR: "car",
    ObjectClass.PEDESTRIAN: "pedestrian",
    ObjectClass.CYCLIST: "bicycle",
}
MODALITIES = ("camera", "lidar", "radar")


def box_record(detection: Detection, sample_token: str, *, truth: bool) -> dict:
    box = detection.box
    centre = [box.x, box.y, box.z]
    return {
        "sample_token": sample_token,
        "translation": centre,
        "size": [box.width, box.length, box.height],
        "rotation": [math.cos(box.yaw / 2), 0.0, 0.0, math.sin(box.yaw / 2)],
        "velocity": list(detection.velocity or (0.0, 0.0)),
        "ego_translation": centre,
        "num_pts": -1,
        "detection_name": NUSCENES_NAME[detection.object_class],
        "detection_score": -1.0 if truth else float(detection.score),
        "attribute_name": "",
    }


def sample_tokens(frames: Sequence[ScoredFrame]) -> list[str]:
    """Each frame's token; an unstamped frame or two frames with one token are an error
    (the devkit keys samples by token, so they would merge)."""
    several_drives = len({frame.drive for frame in frames}) > 1
    tokens: dict[str, int] = {}
    for index, frame in enumerate(frames):
        if frame.stamp_ns is None:
            raise ValueError(f"frame {index} has no stamp: it cannot be named in the results")
        token = f"{frame.drive}/{frame.stamp_ns}" if several_drives else str(frame.stamp_ns)
        if token in tokens:
            raise ValueError(
                f"frames {tokens[token]} and {index} are both {token}: a sample token must "
                "name one frame (the same bag given twice, or a clock that went back?)"
            )
        tokens[token] = index
    return list(tokens)


def _document(frames: Sequence[ScoredFrame], grid: BevGrid, meta: Mapping, *, truth: bool) -> dict:
    results = {
        token: [
            box_record(d, token, truth=truth)
            for d in counted(frame.truth if truth else frame.predictions, grid)
        ]
        for token, frame in zip(sample_tokens(frames), frames, strict=True)
    }
    return {"meta": dict(meta), "results": results}


def results_meta(modalities: Iterable[str], policy: str) -> dict:
    """nuScenes' five flags, and what produced the results."""
    used = set(modalities)
    return {
        **{f"use_{m}": m in used for m in MODALITIES},
        "use_map": False,
        "use_external": False,
        "producer": f"dynfusion_ros {__version__}",
        "policy": policy,
        "frame": "base_link",
    }


def write_nuscenes(
    frames: Sequence[ScoredFrame],
    *,
    grid: BevGrid,
    meta: Mapping,
    detections_path: Path | None = None,
    truth_path: Path | None = None,
) -> list[Path]:
    """Write the detections and/or the ground truth; returns the paths written."""
    written = []
    for path, truth in ((detections_path, False), (truth_path, True)):
        if path is None:
            continue
        document = _document(frames, grid, meta if not truth else _truth_meta(meta), truth=truth)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document) + "\n")
        written.append(path)
    return written


def _truth_meta(meta: Mapping) -> dict:
    return {"ground_truth": True, "producer": meta.get("producer"), "frame": "base_link"}
