"""One camera's calibration and mount, for the visual correction: pixels to rays and
back, the road plane, and lidar depth at the image's pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dynfusion_ros.core.types import NS_PER_S, CameraModel, PointScan

# in the half-resolution depth map, the simulated lidar's rings lie ~4.5 px apart: a
# window tall enough to hold two
DEPTH_WINDOW_PX = (3, 7)  # width, height


@dataclass(frozen=True)
class DepthMap:
    """The nearest lidar depth (optical z, m) in each cell of a half-resolution grid
    over the image (inf where no point falls)."""

    nearest: np.ndarray

    def at(self, pixels: np.ndarray, agreement: float) -> np.ndarray:
        """The depth at (N, 2) ideal pixels (full resolution): the middle of the depths
        in a small window around each, NaN where the window holds none or depths that
        differ by more than ``agreement`` (a share): a corner on the edge between two
        surfaces has no one depth."""
        height, width = self.nearest.shape
        half_w, half_h = DEPTH_WINDOW_PX[0] // 2, DEPTH_WINDOW_PX[1] // 2
        du, dv = np.meshgrid(np.arange(-half_w, half_w + 1), np.arange(-half_h, half_h + 1))
        u = np.round(0.5 * pixels[:, 0]).astype(np.int64)[:, None] + du.ravel()
        v = np.round(0.5 * pixels[:, 1]).astype(np.int64)[:, None] + dv.ravel()
        window = self.nearest[np.clip(v, 0, height - 1), np.clip(u, 0, width - 1)]
        window = np.where((u >= 0) & (u < width) & (v >= 0) & (v < height), window, np.inf)
        near = window.min(axis=1)
        far = np.where(np.isfinite(window), window, -np.inf).max(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            agree = np.isfinite(near) & (far <= near * (1.0 + agreement))
        depth = np.full(len(pixels), np.nan)
        depth[agree] = 0.5 * (near[agree] + far[agree])
        return depth


class CameraGeometry:
    """``rotation`` (base_link from optical) and ``origin`` (m, in base_link) of the
    mount; ``height`` of the camera above the road. Pixel coordinates follow OpenCV and
    CameraInfo: integer coordinates are pixel centres."""

    def __init__(
        self, model: CameraModel, T_base_camera: np.ndarray, ground_below_base_m: float = 0.0
    ) -> None:
        self.model = model
        self.rotation = np.asarray(T_base_camera, float)[:3, :3]
        self.origin = np.asarray(T_base_camera, float)[:3, 3]
        self.focal = 0.5 * (model.fx + model.fy)
        self.height = float(self.origin[2] + ground_below_base_m)
        self.distorted = bool(model.D.size and np.any(model.D))
        self._T_base_camera = np.asarray(T_base_camera, float)
        self._road_masks: dict[tuple[float, float], np.ndarray] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return self.model.height, self.model.width

    def normalised(self, pixels: np.ndarray) -> np.ndarray:
        """Image pixels (N, 2) -> normalised coordinates (x/z, y/z), the lens undone."""
        model = self.model
        pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        if not self.distorted:
            return (pixels.reshape(-1, 2) - [model.cx, model.cy]) / [model.fx, model.fy]
        if model.distortion_model == "equidistant":
            return cv2.fisheye.undistortPoints(pixels, model.K, model.D[:4]).reshape(-1, 2)
        return cv2.undistortPoints(pixels, model.K, model.D).reshape(-1, 2)

    def ideal_pixels(self, normalised: np.ndarray) -> np.ndarray:
        """Normalised coordinates -> pixels of the same camera without its lens."""
        model = self.model
        return normalised * [model.fx, model.fy] + [model.cx, model.cy]

    def to_camera(self, points_base: np.ndarray) -> np.ndarray:
        return (points_base - self.origin) @ self.rotation

    def to_base(self, points_camera: np.ndarray) -> np.ndarray:
        return points_camera @ self.rotation.T + self.origin

    def on_road(self, normalised: np.ndarray, reach_m: tuple[float, float]) -> np.ndarray:
        """Rays (normalised coordinates) cut with the road plane: (N, 3) in base_link,
        NaN for rays that miss it within ``reach_m`` (nearest, farthest) of the camera."""
        rays = np.column_stack([normalised, np.ones(len(normalised))]) @ self.rotation.T
        down = -rays[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(down > 1e-3, self.height / down, np.nan)
        points = self.origin + rays * scale[:, None]
        reach = np.hypot(*(points[:, :2] - self.origin[:2]).T)
        with np.errstate(invalid="ignore"):
            points[~((reach >= reach_m[0]) & (reach <= reach_m[1]))] = np.nan
        return points

    def road_mask(self, reach_m: tuple[float, float]) -> np.ndarray:
        """uint8 mask of the image's pixels that see the road within ``reach_m``."""
        if reach_m not in self._road_masks:
            v, u = np.mgrid[0 : self.model.height, 0 : self.model.width]
            pixels = np.stack([u.ravel(), v.ravel()], axis=1)
            seen = np.isfinite(self.on_road(self.normalised(pixels), reach_m)).all(axis=1)
            self._road_masks[reach_m] = seen.reshape(self.shape).astype(np.uint8) * 255
        return self._road_masks[reach_m]

    def lidar_depth(
        self,
        scan: PointScan,
        stamp_ns: int,
        velocity: np.ndarray,
        yaw_rate: float,
        depth_range_m: tuple[float, float],
    ) -> DepthMap:
        """The sweep's depth in the image taken at ``stamp_ns``, at half the image's
        resolution (the lidar is sparser than that anyway). A sweep takes a tenth of a
        second, in which a car moves a metre: each point (with a ``time`` field) is
        carried to the image's instant on base_link's ``velocity`` and ``yaw_rate``."""
        R_bs = np.asarray(scan.T_base_sensor, float)
        keep = self._in_view(scan, depth_range_m[0])
        points = _transformed(scan.xyz.take(keep, axis=0), R_bs).astype(np.float64)
        times = scan.fields.get("time")
        if times is not None:
            since = (scan.stamp_ns - stamp_ns) / NS_PER_S + times.take(keep).astype(np.float64)
            yaw = yaw_rate * since
            c, s = np.cos(yaw), np.sin(yaw)
            x, y = points[:, 0].copy(), points[:, 1].copy()
            points[:, 0] = c * x - s * y + velocity[0] * since
            points[:, 1] = s * x + c * y + velocity[1] * since
            points[:, 2] += velocity[2] * since
        camera = self.to_camera(points)
        z = camera[:, 2]
        ahead = np.flatnonzero((z > depth_range_m[0]) & (z < depth_range_m[1]))
        camera, z = camera.take(ahead, axis=0), z.take(ahead)
        model, (height, width) = self.model, self.depth_shape
        u = np.round(0.5 * (model.fx * camera[:, 0] / z + model.cx)).astype(np.int64)
        v = np.round(0.5 * (model.fy * camera[:, 1] / z + model.cy)).astype(np.int64)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        cell, z = v[inside] * width + u[inside], z[inside]
        # by cell, nearest first (z / far < 1 orders within a cell): the first of each wins
        order = np.argsort(cell + z / depth_range_m[1])
        cell, z = cell[order], z[order]
        first = np.r_[True, cell[1:] != cell[:-1]][: len(cell)]  # none when no point is in view
        nearest = np.full(height * width, np.inf, np.float32)
        nearest[cell[first]] = z[first]
        return DepthMap(nearest.reshape(height, width))

    def _in_view(self, scan: PointScan, nearest_m: float) -> np.ndarray:
        """Indices of the sweep's points in (a margin around) the camera's view, found in
        the sensor's own frame: about a fifth of a spinning lidar's sweep."""
        T_camera_sensor = np.linalg.inv(self._T_base_camera) @ np.asarray(scan.T_base_sensor)
        camera = _transformed(scan.xyz, T_camera_sensor)
        wide = 1.2 * self.model.width / (2 * self.model.fx)  # tan of half the view, +20 %
        ahead = camera[:, 2] > 0.5 * nearest_m
        return np.flatnonzero(ahead & (np.abs(camera[:, 0]) < wide * camera[:, 2]))

    @property
    def depth_shape(self) -> tuple[int, int]:
        """The depth map's (height, width): half the image's."""
        return (self.model.height + 1) // 2, (self.model.width + 1) // 2


def _transformed(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(N, 3) float32 points through a 4x4 transform (OpenCV's loop: numpy's matmul
    with a 3-wide inner dimension is several times slower)."""
    flat = np.ascontiguousarray(points, np.float32).reshape(-1, 1, 3)
    if len(flat) == 0:  # OpenCV answers None for no points
        return np.zeros((0, 3), np.float32)
    return cv2.transform(flat, transform[:3].astype(np.float32)).reshape(-1, 3)
