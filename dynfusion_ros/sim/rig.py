"""The simulated vehicle's sensor rig: where each sensor sits, what it sees, how often.

base_link is on the ground under the rear axle (REP-105 usage in driving stacks). The
camera frame is an optical frame (z forward, x right, y down), as CameraInfo assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.types import CameraModel

# base -> camera optical: optical z = base x, optical x = -base y, optical y = -base z
BASE_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def transform(rotation: np.ndarray, translation: tuple[float, float, float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


@dataclass(frozen=True)
class SensorRig:
    """Mounting (``T_base_<sensor>``, 4x4) and timing of every simulated sensor."""

    image_width: int = 640
    image_height: int = 384
    horizontal_fov_deg: float = 77.0
    camera_rate_hz: float = 10.0
    lidar_rate_hz: float = 10.0
    lidar_beams: int = 32
    lidar_columns: int = 1024
    lidar_elevation_deg: tuple[float, float] = (-25.0, 15.0)
    lidar_max_range_m: float = 120.0
    radar_rate_hz: float = 20.0
    radar_fov_deg: float = 120.0
    radar_max_range_m: float = 150.0
    imu_rate_hz: float = 200.0
    T_base_camera: np.ndarray = field(
        default_factory=lambda: transform(BASE_FROM_OPTICAL, (1.6, 0.0, 1.4))
    )
    T_base_lidar: np.ndarray = field(default_factory=lambda: transform(np.eye(3), (1.2, 0.0, 1.9)))
    T_base_radar: np.ndarray = field(default_factory=lambda: transform(np.eye(3), (3.7, 0.0, 0.5)))
    T_base_imu: np.ndarray = field(default_factory=lambda: transform(np.eye(3), (0.0, 0.0, 0.3)))
    frame_ids: dict[str, str] = field(
        default_factory=lambda: {
            "base": "base_link",
            "camera": "camera_optical_frame",
            "lidar": "lidar_link",
            "radar": "radar_link",
            "imu": "imu_link",
        }
    )

    def __post_init__(self) -> None:
        if self.image_width < 32 or self.image_height < 32:
            raise ValueError("camera image must be at least 32 x 32 pixels")

    @property
    def camera(self) -> CameraModel:
        focal = (self.image_width / 2) / np.tan(np.radians(self.horizontal_fov_deg) / 2)
        K = np.array(
            [[focal, 0.0, self.image_width / 2], [0.0, focal, self.image_height / 2], [0, 0, 1]]
        )
        return CameraModel(
            self.image_width, self.image_height, K, frame_id=self.frame_ids["camera"]
        )

    @property
    def lidar_elevations(self) -> np.ndarray:
        """Beam elevations (rad), ring 0 lowest."""
        return np.radians(np.linspace(*self.lidar_elevation_deg, self.lidar_beams))

    def extrinsics(self) -> dict[str, np.ndarray]:
        return {
            "camera": self.T_base_camera,
            "lidar": self.T_base_lidar,
            "radar": self.T_base_radar,
            "imu": self.T_base_imu,
        }
