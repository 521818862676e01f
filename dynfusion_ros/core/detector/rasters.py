"""Sensor data to the fixed-size arrays the stems' networks read (numpy, no learning).

Each function takes a core type in its sensor frame, moves it to base_link with the
frame's extrinsics and rasterises it on the shared BEV grid. The camera is not
rasterised: ``camera_lift`` computes, from the camera model and extrinsics, where each
BEV cell at each lift height lands in the image, so the camera stem can gather image
features there (geometry, not a learned guess of where the camera looks).
"""

from __future__ import annotations

import cv2
import numpy as np

from dynfusion_ros.core.detector.config import LIDAR_HEIGHT_EDGES_M, DetectorConfig
from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import CameraImage, CameraModel, PointScan

LIDAR_CHANNELS = len(LIDAR_HEIGHT_EDGES_M) + 3  # counts per slice, max height, intensity
RADAR_CHANNELS = 5  # count, max rcs, radial velocity vector (x, y), |radial velocity|
OUTSIDE = -3.0  # a grid_sample coordinate outside the image: samples zeros


def _cells(grid: BevGrid, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat cell index of each point inside the grid, and the mask of those points."""
    cells, inside = grid.cell_indices(xy)
    return cells[inside, 0] * grid.shape[1] + cells[inside, 1], inside


def lidar_raster(scan: PointScan, config: DetectorConfig) -> np.ndarray:
    """(LIDAR_CHANNELS, rows, cols) float32: log point counts per height slice, the
    highest point (m / 4) and the mean intensity of each cell."""
    grid = config.grid
    points = scan.in_base()
    keep = (points[:, 2] >= grid.z_min) & (points[:, 2] <= grid.z_max)
    points = points[keep]
    index, inside = _cells(grid, points)
    z = points[inside, 2]
    size = grid.shape[0] * grid.shape[1]
    raster = np.zeros((LIDAR_CHANNELS, size), dtype=np.float32)
    slices = np.searchsorted(np.asarray(LIDAR_HEIGHT_EDGES_M), z)
    for number in range(len(LIDAR_HEIGHT_EDGES_M) + 1):
        raster[number] = np.bincount(index[slices == number], minlength=size)
    counts = raster[: len(LIDAR_HEIGHT_EDGES_M) + 1].sum(axis=0)
    top = np.full(size, -np.inf, dtype=np.float32)
    np.maximum.at(top, index, z.astype(np.float32))
    raster[-2] = np.where(counts > 0, np.clip(top, 0.0, 4.0) / 4.0, 0.0)
    intensity = scan.fields.get("intensity")
    if intensity is not None:
        total = np.bincount(index, weights=intensity[keep][inside], minlength=size)
        raster[-1] = total / np.maximum(counts, 1) / config.lidar_intensity_scale
    raster[: len(LIDAR_HEIGHT_EDGES_M) + 1] = np.log1p(raster[: len(LIDAR_HEIGHT_EDGES_M) + 1])
    return raster.reshape(LIDAR_CHANNELS, *grid.shape)


def radar_raster(scan: PointScan, config: DetectorConfig) -> np.ndarray:
    """(RADAR_CHANNELS, rows, cols) float32 on the head grid (radar is coarse): log
    detection count, strongest RCS, mean radial velocity as a vector along the line of
    sight, and its magnitude."""
    grid = _head_grid(config)
    points = scan.in_base()
    index, inside = _cells(grid, points)
    size = grid.shape[0] * grid.shape[1]
    raster = np.zeros((RADAR_CHANNELS, size), dtype=np.float32)
    if not len(index):
        return raster.reshape(RADAR_CHANNELS, *grid.shape)
    counts = np.bincount(index, minlength=size).astype(np.float32)
    raster[0] = np.log1p(counts)
    rcs = scan.fields.get("rcs", np.zeros(len(points), dtype=np.float32))[inside]
    strongest = np.full(size, -np.inf, dtype=np.float32)
    np.maximum.at(
        strongest, index, (rcs + config.radar_rcs_offset_dbsm) / config.radar_rcs_scale_db
    )
    raster[1] = np.where(counts > 0, strongest, 0.0)
    doppler = scan.fields.get("doppler")
    if doppler is not None:
        sensor = scan.T_base_sensor[:3, 3].astype(np.float32)
        line_of_sight = points[inside] - sensor
        line_of_sight /= np.maximum(np.linalg.norm(line_of_sight, axis=1, keepdims=True), 1e-3)
        radial = doppler[inside] / config.radar_velocity_scale_mps
        along_x, along_y = radial * line_of_sight[:, 0], radial * line_of_sight[:, 1]
        for channel, weights in ((2, along_x), (3, along_y), (4, np.abs(radial))):
            raster[channel] = np.bincount(index, weights=weights, minlength=size) / np.maximum(
                counts, 1
            )
    return raster.reshape(RADAR_CHANNELS, *grid.shape)


def _head_grid(config: DetectorConfig) -> BevGrid:
    grid = config.grid
    return BevGrid(
        grid.x_min, grid.x_max, grid.y_min, grid.y_max, config.head_cell_m, grid.z_min, grid.z_max
    )


def camera_input(image: CameraImage, config: DetectorConfig) -> np.ndarray:
    """(3, height, width) uint8 RGB at the network's input size."""
    if image.pixels.ndim != 3 or image.pixels.shape[2] != 3:
        raise ValueError(
            f"camera stem needs an RGB image, got {image.encoding} {image.pixels.shape}"
        )
    resized = cv2.resize(image.pixels, config.camera_input, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def camera_lift(
    model: CameraModel, T_base_camera: np.ndarray, config: DetectorConfig
) -> np.ndarray:
    """(heights, rows, cols, 2) float32 grid_sample coordinates in [-1, 1] of every head-grid
    cell centre at every lift height, projected into the image (``OUTSIDE`` where the
    point is behind the camera or out of the image)."""
    centres = _head_grid(config).cell_centres()
    heights = np.asarray(config.lift_heights_m)
    rows, cols = centres.shape[:2]
    points = np.empty((len(heights), rows, cols, 3))
    points[..., :2] = centres
    points[..., 2] = heights[:, None, None]
    T_camera_base = np.linalg.inv(T_base_camera)
    in_camera = points.reshape(-1, 3) @ T_camera_base[:3, :3].T + T_camera_base[:3, 3]
    pixels, visible = model.project(in_camera)
    normalised = np.empty_like(pixels)
    normalised[:, 0] = 2.0 * (pixels[:, 0] + 0.5) / model.width - 1.0
    normalised[:, 1] = 2.0 * (pixels[:, 1] + 0.5) / model.height - 1.0
    normalised[~visible] = OUTSIDE
    return normalised.reshape(len(heights), rows, cols, 2).astype(np.float32)


def blank_inputs(config: DetectorConfig) -> dict[str, np.ndarray]:
    """Every stem's input for a frame where nothing was seen (no point, a black image
    that no BEV cell lands in), at the shapes real frames have: to run the network once
    before the first frame."""
    width, height = config.camera_input
    head = _head_grid(config)
    return {
        "camera": np.zeros((3, height, width), dtype=np.uint8),
        "camera_lift": np.full(
            (len(config.lift_heights_m), *head.shape, 2), OUTSIDE, dtype=np.float32
        ),
        "lidar": np.zeros((LIDAR_CHANNELS, *config.grid.shape), dtype=np.float32),
        "radar": np.zeros((RADAR_CHANNELS, *head.shape), dtype=np.float32),
    }
