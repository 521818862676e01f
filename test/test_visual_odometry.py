"""The camera correction: the camera's geometry (road plane, lidar depth), the planar
motion fit, and what the correction says when it cannot run."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from dynfusion_ros.core.odometry.camera_geometry import CameraGeometry
from dynfusion_ros.core.odometry.estimator import OdometryEstimator
from dynfusion_ros.core.odometry.planar_motion import Mount, fit_planar_motion, reproject
from dynfusion_ros.core.odometry.visual_odometry import VisualSettings
from dynfusion_ros.core.types import CameraImage, PointScan
from dynfusion_ros.sim.rig import SensorRig

RIG = SensorRig()
GEOMETRY = CameraGeometry(RIG.camera, RIG.T_base_camera)
MOUNT = Mount(GEOMETRY.rotation, GEOMETRY.origin, GEOMETRY.focal)
TRUE_MOTION = np.array([1.2, 0.04, 0.012])  # 12 m/s, slight turn, over 0.1 s


def _scene(rng, count):
    """Points of a street seen by the camera: (N, 3) in base_link."""
    return np.column_stack(
        [rng.uniform(6, 40, count), rng.uniform(-8, 8, count), rng.uniform(0, 4, count)]
    )


def _tracks(points, motion, rng, sigma_px=0.5):
    clean = reproject(MOUNT, points, motion[None])[0]
    return clean + rng.normal(0, sigma_px / MOUNT.focal, clean.shape)


def test_road_pixels_back_project_onto_the_road():
    ground = np.array([[8.0, 1.5, 0.0], [20.0, -3.0, 0.0]])
    camera = GEOMETRY.to_camera(ground)
    normalised = camera[:, :2] / camera[:, 2:]
    back = GEOMETRY.on_road(normalised, (3.0, 25.0))
    np.testing.assert_allclose(back, ground, atol=1e-9)
    assert np.isnan(GEOMETRY.on_road(normalised, (3.0, 10.0))[1]).all()  # beyond the reach
    sky = np.array([[0.0, -0.3]])  # above the horizon
    assert np.isnan(GEOMETRY.on_road(sky, (3.0, 25.0))).all()


def test_lidar_depth_is_read_off_surfaces_and_refused_on_their_edges():
    # a wall 10 m ahead, 4 m wide, in front of a wall 30 m ahead (seen around it)
    wall = [(10.0, y, z) for y in np.linspace(-2, 2, 200) for z in np.linspace(0.5, 2.5, 40)]
    sides = np.r_[np.linspace(-12, -6, 200), np.linspace(6, 12, 200)]
    back = [(30.0, y, z) for y in sides for z in np.linspace(0.5, 2.5, 40)]
    xyz = np.array(wall + back, np.float32)
    scan = PointScan(0, xyz, T_base_sensor=np.eye(4))
    depth = GEOMETRY.lidar_depth(scan, 0, np.zeros(3), 0.0, (2.0, 60.0))
    probe = GEOMETRY.to_camera(np.array([[10.0, 0.0, 1.5], [30.0, 9.0, 1.5], [10.0, 2.0, 1.5]]))
    pixels = GEOMETRY.ideal_pixels(probe[:, :2] / probe[:, 2:])
    depths = depth.at(pixels, 0.05)
    assert depths[0] == pytest.approx(10.0 - GEOMETRY.origin[0], abs=0.05)
    assert depths[1] == pytest.approx(30.0 - GEOMETRY.origin[0], abs=0.15)
    assert np.isnan(depths[2])  # the wall's edge: 10 m and 30 m in one window
    behind = PointScan(0, -xyz, T_base_sensor=np.eye(4))  # a sweep with nothing in view
    assert np.isnan(
        GEOMETRY.lidar_depth(behind, 0, np.zeros(3), 0.0, (2.0, 60.0)).at(pixels, 0.05)
    ).all()


def test_the_planar_motion_is_recovered_among_outliers_and_its_covariance_is_honest():
    rng = np.random.default_rng(4)
    z_scores = []
    for _ in range(60):
        points = _scene(rng, 60)
        tracked = _tracks(points, TRUE_MOTION, rng)
        tracked[:12] += rng.normal(0, 20 / MOUNT.focal, (12, 2))  # 20 % lost tracks
        motion = fit_planar_motion(
            MOUNT,
            points,
            tracked,
            np.full(len(points), 0.5),
            prior=TRUE_MOTION + np.array([0.05, -0.02, 0.002]),
            prior_covariance=np.diag([0.1, 0.05, 0.01]) ** 2,
            interval_s=0.1,
            min_inliers=20,
            rng=rng,
        )
        assert not isinstance(motion, str), motion
        assert 45 <= motion.inliers <= 50  # the 48 good tracks (a lost one may land near)
        z_scores.append((motion.as_vector - TRUE_MOTION) / np.sqrt(np.diag(motion.covariance)))
    rms = np.sqrt(np.mean(np.square(z_scores), axis=0))
    assert np.all((rms > 0.6) & (rms < 1.5)), rms


def test_a_car_keeping_our_speed_does_not_outvote_the_street():
    rng = np.random.default_rng(5)
    street, car = _scene(rng, 25), _scene(rng, 40) * [0.3, 0.2, 0.4] + [8.0, 0.0, 0.0]
    tracked = np.vstack(
        [_tracks(street, TRUE_MOTION, rng), _tracks(car, np.zeros(3), rng)]  # it moves with us
    )
    points = np.vstack([street, car])

    def fit(prior_sigma):
        return fit_planar_motion(
            MOUNT,
            points,
            tracked,
            np.full(len(points), 0.5),
            prior=TRUE_MOTION + np.array([0.03, 0.0, 0.0]),
            prior_covariance=np.diag(prior_sigma) ** 2,
            interval_s=0.1,
            min_inliers=20,
            rng=rng,
        )

    radar_aided = fit([0.1, 0.05, 0.01])  # the filter sure of the motion within 0.1 m
    assert np.all(np.abs(radar_aided.as_vector - TRUE_MOTION) < [0.05, 0.05, 0.005])
    assert radar_aided.inliers <= 26
    lost = fit([10.0, 10.0, 1.0])  # a filter that knows nothing lets the car win
    assert np.all(np.abs(lost.as_vector) < [0.05, 0.05, 0.005]), lost


def test_degenerate_or_too_few_tracks_say_why():
    rng = np.random.default_rng(6)
    points = _scene(rng, 10)
    reason = fit_planar_motion(
        MOUNT,
        points,
        _tracks(points, TRUE_MOTION, rng),
        np.full(10, 0.5),
        prior=TRUE_MOTION,
        prior_covariance=np.eye(3),
        interval_s=0.1,
        min_inliers=20,
        rng=rng,
    )
    assert reason == "10 tracked corners (at least 20)"
    with pytest.raises(ValueError, match="depth_range_m must be"):
        VisualSettings(depth_range_m=(5.0, 2.0))


def test_the_camera_correction_runs_on_simulated_frames_and_says_why_when_it_cannot(
    clear_frames,
):
    frames = [labelled.frame for labelled in clear_frames]
    estimator = OdometryEstimator()
    first = estimator.step(frames[0], ("camera",))
    assert first.outcomes["camera"] == "no previous camera image to track from"
    outcomes = [estimator.step(frame, ("camera",)).outcomes["camera"] for frame in frames[1:8]]
    assert outcomes.count("accepted") >= 5, outcomes

    depth = copy.copy(frames[8])
    image = depth.camera
    depth.camera = CameraImage(
        image.stamp_ns, np.ones(image.pixels.shape[:2], np.float32), "32FC1", image.model
    )
    assert estimator.step(depth, ("camera",)).outcomes["camera"] == (
        "a 32FC1 image has no texture to track"
    )
    black = copy.copy(frames[9])
    black.camera = CameraImage(
        black.camera.stamp_ns, np.zeros_like(image.pixels), "rgb8", image.model
    )
    outcome = estimator.step(black, ("camera",)).outcomes["camera"]
    assert outcome == "previous image: a 32FC1 image has no texture to track"
    step = estimator.step(frames[10], ("camera",))  # after the black image
    assert step.outcomes["camera"].startswith("0 corners placed in 3-D by the lidar"), step
    uncalibrated = copy.copy(frames[11])
    uncalibrated.camera = copy.copy(frames[11].camera)
    uncalibrated.camera.model = None
    step = estimator.step(uncalibrated, ("camera",))
    assert step.outcomes["camera"] == "the camera image has no calibration (CameraInfo)"
    assert step.estimate is not None and np.isfinite(step.estimate.position).all()
    assert math.isfinite(step.estimate.linear_velocity[0])


def test_without_lidar_the_road_plane_places_the_corners(clear_frames):
    estimator, outcomes = OdometryEstimator(), []
    for labelled in clear_frames:
        frame = copy.copy(labelled.frame)
        frame.lidar = None
        outcomes.append(estimator.step(frame, ("camera",)).outcomes["camera"])
    assert outcomes.count("accepted") >= len(outcomes) // 2, outcomes
