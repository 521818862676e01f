"""Context features respond to what they claim to measure, and survive missing sensors;
the per-frame quality the gate learns has hand-worked values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dynfusion_ros.core.context import FEATURE_NAMES, ContextEstimator, _grey, _quantile
from dynfusion_ros.core.quality import frame_quality
from dynfusion_ros.core.types import (
    Box3D,
    CameraImage,
    Detection,
    Modality,
    ObjectClass,
    PointScan,
)


def feature(frame, name: str, estimator: ContextEstimator | None = None) -> float:
    return (estimator or ContextEstimator())(frame).as_dict()[name]


def test_every_feature_is_finite_on_a_full_frame(clear_frames):
    values = ContextEstimator()(clear_frames[3].frame).values
    assert values.shape == (len(FEATURE_NAMES),)
    missing = [n for n, v in zip(FEATURE_NAMES, values, strict=True) if not np.isfinite(v)]
    assert missing == ["camera_change"]  # nothing to compare the first image with


def test_darkness_and_a_frozen_camera_show(clear_frames):
    frame = clear_frames[3].frame
    dark_image = dataclasses.replace(frame.camera, pixels=frame.camera.pixels // 8)
    dark = dataclasses.replace(frame, camera=dark_image)
    assert feature(dark, "camera_brightness") < feature(frame, "camera_brightness") / 4
    assert feature(dark, "camera_dark_fraction") > 0.5
    estimator = ContextEstimator()
    estimator(frame)
    assert feature(frame, "camera_change", estimator) == 0.0  # the same image again


def test_fog_backscatter_raises_the_near_fraction(clear_frames):
    frame = clear_frames[3].frame
    rng = np.random.default_rng(0)
    haze = rng.normal(0.0, 1.0, (len(frame.lidar), 3)).astype(np.float32)
    haze = haze / np.linalg.norm(haze, axis=1, keepdims=True) * 2.0  # returns at 2 m
    foggy_scan = PointScan(frame.lidar.stamp_ns, np.concatenate([frame.lidar.xyz, haze]))
    foggy = dataclasses.replace(frame, lidar=foggy_scan)
    assert feature(foggy, "lidar_near_fraction") > feature(frame, "lidar_near_fraction") + 0.3
    assert np.isnan(feature(foggy, "lidar_intensity"))  # no intensity field: unknown


def test_radar_recovers_the_ego_speed_from_static_returns():
    rng = np.random.default_rng(1)
    azimuth = rng.uniform(-0.9, 0.9, 40)
    xyz = np.stack([20 * np.cos(azimuth), 20 * np.sin(azimuth), np.zeros(40)], 1)
    doppler = -12.0 * np.cos(azimuth)  # static world, ego at 12 m/s
    doppler[:5] = 8.0  # movers
    from dynfusion_ros.core.types import SensorFrame

    scan = PointScan(0, xyz.astype(np.float32), {"doppler": doppler.astype(np.float32)})
    values = ContextEstimator()(SensorFrame(0, radar=scan)).as_dict()
    assert values["ego_speed"] * 20 == pytest.approx(12.0, abs=0.1)
    assert values["radar_nonstatic_fraction"] == pytest.approx(5 / 40)


def test_missing_sensors_leave_nan_and_clear_flags(clear_frames):
    frame = dataclasses.replace(clear_frames[3].frame, camera=None, lidar=None)
    values = ContextEstimator()(frame)
    as_dict = values.as_dict()
    assert np.isnan(as_dict["camera_brightness"]) and np.isnan(as_dict["lidar_return_ratio"])
    assert not values.available(Modality.CAMERA) and values.available(Modality.RADAR)
    assert as_dict["lidar_age"] == 0.0


def _car(x: float, y: float, score: float = 1.0) -> Detection:
    return Detection(ObjectClass.CAR, score, Box3D(x, y, 0.8, 4.5, 1.9, 1.6, 0.0))


def test_the_fast_reductions_give_numpy_s_figures():
    """The context features are read on every frame, so two of them avoid numpy's slow
    paths (a partial sort for the range quantile; colours one by one for the grey
    image); the figures must stay what the gate was trained on."""
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 2644):
        ranges = rng.uniform(0.0, 80.0, size).astype(np.float32)
        assert _quantile(ranges, 0.9) == pytest.approx(float(np.percentile(ranges, 90)))
    pixels = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    grey, dark = _grey(CameraImage(0, pixels, "rgb8"), 8)
    rgb = pixels[::8, ::8].astype(np.float32) / 255.0
    assert grey == pytest.approx(rgb.mean(axis=2), abs=1e-6)
    assert dark == pytest.approx(rgb.min(axis=2), abs=1e-6)


def test_frame_quality_hand_worked():
    truth = [_car(10, 0), _car(20, 5)]
    assert frame_quality(truth, truth) == 1.0
    assert frame_quality([], truth) == 0.0
    # one of two found, exactly: recall 0.5 at precision 1 at every threshold
    assert frame_quality([_car(10, 0)], truth) == pytest.approx(0.5)
    # the weaker one 0.7 m off: a hit at 1, 2 and 4 m, a miss ranked last at 0.5 m
    found = [_car(20, 5), _car(10.7, 0, score=0.9)]
    assert frame_quality(found, truth) == pytest.approx((0.5 + 3) / 4)
    # ranked first, the miss halves the precision of the hit behind it
    found = [_car(20, 5, score=0.9), _car(10.7, 0)]
    assert frame_quality(found, truth) == pytest.approx((0.25 + 3) / 4)
    assert frame_quality([_car(30, 0, score=0.8)], []) == pytest.approx(0.2)
    assert frame_quality([], []) == 1.0
    assert frame_quality([_car(-30, 0)], truth) == 0.0  # off the grid: not a detection
