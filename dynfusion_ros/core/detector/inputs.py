"""A frame's sensor data to stem inputs, shared by inference and training so both see
exactly the same arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.rasters import (
    camera_input,
    camera_lift,
    lidar_raster,
    radar_raster,
)
from dynfusion_ros.core.types import CameraImage, Modality, SensorFrame


@dataclass
class StemInputs:
    """Arrays by input name (``camera``, ``camera_lift``, ``lidar``, ``radar``) and, for each
    stem that cannot run on this frame, the reason."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


class LiftCache:
    """Camera lift grids by camera model and extrinsics: they change rarely, cost ~10 ms."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.grids: dict[bytes, np.ndarray] = {}

    def __call__(self, image: CameraImage) -> np.ndarray:
        model = image.model
        key = model.K.tobytes() + np.array([model.width, model.height]).tobytes()
        key += model.D.tobytes() + model.distortion_model.encode() + image.T_base_sensor.tobytes()
        if key not in self.grids:
            if len(self.grids) > 8:
                self.grids.clear()
            self.grids[key] = camera_lift(model, image.T_base_sensor, self.config)
        return self.grids[key]


def stem_input(
    frame: SensorFrame, stem: Modality, config: DetectorConfig, lifts: LiftCache
) -> StemInputs:
    """The input of one stem, or why it cannot run."""
    result = StemInputs()
    data = getattr(frame, stem.value)
    if data is None:
        result.unavailable[stem.value] = f"no {stem.value} data in this frame"
        return result
    try:
        if stem is Modality.CAMERA:
            if data.model is None:
                raise ValueError("camera image without a camera model (no CameraInfo)")
            result.arrays["camera"] = camera_input(data, config)
            result.arrays["camera_lift"] = lifts(data)
        elif stem is Modality.LIDAR:
            result.arrays["lidar"] = lidar_raster(data, config)
        else:
            result.arrays["radar"] = radar_raster(data, config)
    except ValueError as error:
        result.arrays.clear()
        result.unavailable[stem.value] = str(error)
    return result
