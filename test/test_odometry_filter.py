"""The IMU-driven error-state filter and the radar-doppler correction, on exact signals
where the answer is known and on bad input (a simulated drive: test_odometry_selection)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynfusion_ros.core.odometry.constraints import ground_vehicle_update
from dynfusion_ros.core.odometry.filter import (
    CLONE_ATTITUDE,
    CLONE_POSITION,
    GRAVITY_MPS2,
    POSE_ERROR,
    ImuFilter,
    ImuNoise,
)
from dynfusion_ros.core.odometry.radar_velocity import (
    ELEVATION_SIGMA_RAD,
    fit_radar_velocity,
    radar_velocity_update,
)
from dynfusion_ros.core.rotations import (
    matrix_quaternion,
    quaternion_matrix,
    quaternion_yaw,
    so3_exp,
    so3_log,
)
from dynfusion_ros.core.types import ImuSample, PointScan

RATE_HZ = 200
STEP_NS = 1_000_000_000 // RATE_HZ


def _sample(k: int, accel=(0.0, 0.0, GRAVITY_MPS2), rate=(0.0, 0.0, 0.0)) -> ImuSample:
    return ImuSample(k * STEP_NS, np.array(rate, float), np.array(accel, float))


def _run(filter_: ImuFilter, seconds: float, **signal) -> None:
    for k in range(round(seconds * RATE_HZ) + 1):
        filter_.propagate(_sample(k, **signal))


def test_rotations_round_trip():
    rng = np.random.default_rng(1)
    for vector in [np.zeros(3), np.array([1e-10, 0, 0]), *rng.normal(0, 1.0, (20, 3))]:
        rotation = so3_exp(vector)
        assert rotation @ rotation.T == pytest.approx(np.eye(3), abs=1e-12)
        assert so3_exp(so3_log(rotation)) == pytest.approx(rotation, abs=1e-9)
        assert quaternion_matrix(matrix_quaternion(rotation)) == pytest.approx(rotation, abs=1e-9)
    assert quaternion_yaw(matrix_quaternion(so3_exp(np.array([0, 0, 0.7])))) == pytest.approx(0.7)


def test_at_rest_the_filter_stays_put_and_its_uncertainty_grows_honestly():
    filter_ = ImuFilter()
    _run(filter_, 10.0)
    estimate = filter_.estimate()
    assert np.abs(estimate.position).max() < 1e-9
    assert np.abs(estimate.linear_velocity).max() < 1e-9
    # nothing corrects the start speed (10 m/s, 1 sigma): position sigma about 100 m
    assert math.sqrt(estimate.pose_covariance[0, 0]) == pytest.approx(100.0, rel=0.05)
    assert np.all(np.linalg.eigvalsh(estimate.pose_covariance) > 0)
    assert np.all(np.linalg.eigvalsh(estimate.twist_covariance) > 0)


def test_a_tilted_start_is_levelled_from_gravity():
    pitch = 0.1  # nose up: gravity shows partly along -x
    force = GRAVITY_MPS2 * np.array([-math.sin(pitch), 0.0, math.cos(pitch)])
    filter_ = ImuFilter()
    _run(filter_, 2.0, accel=force)
    estimate = filter_.estimate()
    assert np.abs(estimate.position).max() < 1e-6  # gravity fully explained
    rotation = quaternion_matrix(estimate.orientation)
    assert math.asin(-rotation[2, 0]) == pytest.approx(pitch, abs=1e-9)


def test_constant_acceleration_and_turn_integrate_exactly():
    filter_ = ImuFilter()
    filter_.propagate(_sample(0))  # starts at rest: gravity alone says which way is up
    for k in range(1, 2 * RATE_HZ + 1):
        filter_.propagate(_sample(k, accel=(1.0, 0.0, GRAVITY_MPS2)))
    estimate = filter_.estimate()
    accelerating = 2.0 - 1.0 / RATE_HZ  # each reading holds until the next sample
    assert estimate.position[0] == pytest.approx(0.5 * accelerating**2, rel=1e-9)
    assert estimate.linear_velocity[0] == pytest.approx(accelerating, rel=1e-9)
    turning = ImuFilter()
    _run(turning, 3.0, rate=(0.0, 0.0, 0.2))
    assert quaternion_yaw(turning.estimate().orientation) == pytest.approx(0.6, rel=1e-9)


def test_a_frame_s_samples_integrated_together_match_one_at_a_time():
    """The filter queues IMU intervals and integrates them when its state is read; the
    result must not depend on how often it is read (a clone's block included)."""
    rng = np.random.default_rng(3)
    samples = [
        _sample(
            k,
            accel=(*rng.normal(2.0, 1.0, 2), GRAVITY_MPS2 + rng.normal(0, 0.3)),
            rate=rng.normal(0, 0.3, 3),
        )
        for k in range(100)
    ]
    read_often, read_once = ImuFilter(), ImuFilter()
    for filter_ in (read_often, read_once):
        for sample in samples[:20]:
            filter_.propagate(sample)
        filter_.clone_pose()
    for sample in samples[20:]:
        read_often.propagate(sample)
        read_often.estimate()
        read_once.propagate(sample)
    often, once = read_often.estimate(), read_once.estimate()
    assert once.position == pytest.approx(often.position, abs=1e-9)
    assert once.orientation == pytest.approx(often.orientation, abs=1e-12)
    assert once.linear_velocity == pytest.approx(often.linear_velocity, abs=1e-9)
    assert read_once.state.covariance == pytest.approx(read_often.state.covariance, abs=1e-12)
    assert np.abs(often.position).max() > 0.1  # it did move (0.25 m)


def test_bad_imu_samples_are_skipped_and_counted():
    filter_ = ImuFilter()
    _run(filter_, 1.0)
    last = round(1.0 * RATE_HZ)
    assert not filter_.propagate(_sample(last + 1, accel=(math.nan, 0.0, 9.8)))
    assert not filter_.propagate(_sample(last + 1, rate=(0.0, 0.0, math.inf)))
    assert not filter_.propagate(_sample(last + 1, accel=(500.0, 0.0, 0.0)))
    assert not filter_.propagate(_sample(last + 1, rate=(1e200, 0.0, 0.0)))  # squares overflow
    assert not filter_.propagate(_sample(last - 3))  # out of order
    assert filter_.skipped == {
        "NaN or infinite value": 2,
        "acceleration beyond 16 g": 1,
        "angular rate beyond 2000 deg/s": 1,
        "stamp not after the previous sample (out of order)": 1,
    }
    assert filter_.propagate(_sample(last + 1))
    assert np.isfinite(filter_.estimate().position).all()


def test_a_gap_is_bridged_with_a_warning_and_reopened_uncertainty():
    filter_ = ImuFilter(ImuNoise(initial_velocity_sigma=0.5))
    _run(filter_, 1.0)
    before = filter_.estimate().twist_covariance[0, 0]
    assert filter_.propagate(_sample(round(3.0 * RATE_HZ)))  # 2 s without IMU
    assert filter_.warnings and "gap of 2.00 s" in filter_.warnings[0]
    assert filter_.estimate().twist_covariance[0, 0] >= before + 0.5**2


def test_the_gate_rejects_an_inconsistent_correction_and_takes_a_consistent_one():
    filter_ = ImuFilter(ImuNoise(initial_velocity_sigma=1.0))
    _run(filter_, 0.5)
    H = np.zeros((3, 15))
    H[:, 3:6] = np.eye(3)  # velocity in odom
    noise = np.eye(3) * 0.01
    far = filter_.update("test", np.array([40.0, 0.0, 0.0]), H, noise)
    assert not far.accepted and far.distance_squared > far.threshold
    assert filter_.rejected["test"] == 1
    near = filter_.update("test", np.array([0.5, 0.0, 0.0]), H, noise)
    assert near.accepted
    assert filter_.estimate().linear_velocity[0] == pytest.approx(0.5, rel=0.02)
    assert filter_.estimate().twist_covariance[0, 0] < 0.02


def _radar_scan(velocity_xy, rng, *, static=60, movers=15, elevation_sigma=0.0) -> PointScan:
    """Returns around a radar moving at ``velocity_xy`` (its own axes): static ones obey
    doppler = -d.v along the 3-D line of sight, movers have doppler of their own; each
    height is reported with ``elevation_sigma`` (rad) of noise."""
    azimuth = rng.uniform(-1.0, 1.0, static + movers)
    distance = rng.uniform(5.0, 60.0, static + movers)
    xyz = np.stack(
        [
            distance * np.cos(azimuth),
            distance * np.sin(azimuth),
            rng.uniform(-0.5, 1.0, len(azimuth)),
        ],
        axis=1,
    )
    unit = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    doppler = -(unit[:, :2] @ np.asarray(velocity_xy)) + rng.normal(0.0, 0.1, len(xyz))
    doppler[static:] = rng.uniform(-20.0, 20.0, movers)
    xyz[:, 2] += rng.normal(0.0, elevation_sigma, len(xyz)) * distance
    xyz = xyz.astype(np.float32)
    T = np.eye(4)
    T[:3, 3] = (3.7, 0.0, 0.5)
    return PointScan(0, xyz, {"doppler": doppler.astype(np.float32)}, "radar", T)


def test_radar_velocity_fit_ignores_moving_returns():
    rng = np.random.default_rng(3)
    fit = fit_radar_velocity(_radar_scan((12.0, -0.8), rng), rng)
    assert not isinstance(fit, str)
    assert fit.velocity == pytest.approx([12.0, -0.8], abs=0.1)
    assert 50 <= fit.inliers <= 62
    assert np.all(np.sqrt(np.diag(fit.covariance)) < 0.1)


def test_coarse_radar_elevation_does_not_bias_the_fitted_speed():
    """Taken at face value, a height with 2 degrees of noise lengthens every slant range
    and the speed comes out high by about sigma^2 / 2 (0.06 %, 0.018 m/s at 30 m/s,
    which integrates to metres over a drive); the fit takes that noise out."""
    rng = np.random.default_rng(11)
    speeds = []
    for _ in range(200):
        scan = _radar_scan((30.0, 0.0), rng, movers=0, elevation_sigma=ELEVATION_SIGMA_RAD)
        speeds.append(fit_radar_velocity(scan, rng).velocity[0])
    assert np.mean(speeds) == pytest.approx(30.0, abs=0.006)


def test_radar_velocity_fit_says_why_it_cannot():
    rng = np.random.default_rng(4)
    few = _radar_scan((10.0, 0.0), rng, static=3, movers=0)
    assert "usable radar returns" in fit_radar_velocity(few, rng)
    scan = _radar_scan((10.0, 0.0), rng)
    no_doppler = PointScan(0, scan.xyz, {}, "radar", scan.T_base_sensor)
    assert "no doppler" in fit_radar_velocity(no_doppler, rng)
    scattered = _radar_scan((10.0, 0.0), rng, static=0, movers=40)
    assert isinstance(fit_radar_velocity(scattered, rng), str)


def test_radar_update_accounts_for_the_lever_arm_while_turning():
    """Turning at 0.3 rad/s, base_link still, the radar 3.7 m ahead moves sideways at
    1.11 m/s: the filter must read that as a turn, not as base_link sliding."""
    rng = np.random.default_rng(5)
    filter_ = ImuFilter(ImuNoise(initial_velocity_sigma=2.0))
    _run(filter_, 0.2, rate=(0.0, 0.0, 0.3))
    fit = fit_radar_velocity(_radar_scan((0.0, 0.3 * 3.7), rng), rng)
    update = radar_velocity_update(filter_, fit, np.array(_radar_scan((0, 0), rng).T_base_sensor))
    assert update.accepted
    assert np.abs(filter_.body_velocity[:2]).max() < 0.1


def test_the_ground_vehicle_constraint_stops_vertical_drift():
    """An accelerometer reading 0.05 m/s^2 too high sends the IMU-only height off
    quadratically; a car does not climb on a flat road."""
    drifting, constrained = ImuFilter(), ImuFilter()
    for k in range(10 * RATE_HZ + 1):
        sample = _sample(k, accel=(0.0, 0.0, GRAVITY_MPS2 + (0.05 if k else 0.0)))
        drifting.propagate(sample)
        constrained.propagate(sample)
        if k % 20 == 0:
            assert ground_vehicle_update(constrained).accepted
    assert drifting.estimate().position[2] == pytest.approx(0.5 * 0.05 * 10.0**2, rel=0.01)
    assert abs(constrained.estimate().position[2]) < 0.05
    assert constrained.accepted["ground_vehicle"] == 101  # every 20th of 2001 samples


def test_an_imu_mounted_turned_is_read_in_base_link_axes():
    from dataclasses import replace
    from types import SimpleNamespace

    from geometry_msgs.msg import TransformStamped

    from dynfusion_ros.core.rotations import yaw_quaternion
    from dynfusion_ros.core.types import ImuSample, Modality
    from dynfusion_ros.ros.convert.imu import sample_to_imu
    from dynfusion_ros.ros.frames import FrameBuilder, MountUnknownError

    mount = TransformStamped()
    mount.header.frame_id, mount.child_frame_id = "base_link", "imu_link"
    x, y, z, w = yaw_quaternion(np.pi / 2)  # x of the IMU points along base_link's y
    mount.transform.rotation.x, mount.transform.rotation.y = x, y
    mount.transform.rotation.z, mount.transform.rotation.w = z, w
    builder = FrameBuilder()
    sample = ImuSample(
        1, [0.0, 0.0, 0.3], [2.0, 0.0, 9.8], linear_acceleration_covariance=np.diag([1, 4, 9.0])
    )
    with pytest.raises(MountUnknownError, match="'imu_link' is in no transform received"):
        builder.convert(Modality.IMU, sample_to_imu(sample))  # never taken as level
    level = builder.convert(Modality.IMU, sample_to_imu(replace(sample, frame_id="base_link")))
    np.testing.assert_allclose(level.linear_acceleration, [2.0, 0.0, 9.8])
    builder.take_transforms(SimpleNamespace(transforms=[mount]))
    turned = builder.convert(Modality.IMU, sample_to_imu(sample))
    np.testing.assert_allclose(turned.linear_acceleration, [0.0, 2.0, 9.8], atol=1e-12)
    np.testing.assert_allclose(turned.angular_velocity, [0.0, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(np.diag(turned.linear_acceleration_covariance), [4, 1, 9.0])
    assert turned.frame_id == "base_link"


def test_a_clone_starts_as_the_pose_and_stays_while_the_vehicle_moves():
    filter_ = ImuFilter()
    _run(filter_, 1.0)
    pose_block = filter_.state.covariance[np.ix_(POSE_ERROR, POSE_ERROR)].copy()
    filter_.clone_pose()
    P = filter_.state.covariance
    clone = np.r_[CLONE_POSITION, CLONE_ATTITUDE]
    assert P.shape == (21, 21)
    assert P[np.ix_(clone, clone)] == pytest.approx(pose_block)
    assert P[np.ix_(clone, POSE_ERROR)] == pytest.approx(pose_block)  # fully correlated
    kept = filter_.clone.matrix.copy()
    for k in range(round(1.0 * RATE_HZ), round(2.0 * RATE_HZ)):
        filter_.propagate(_sample(k, accel=(1.0, 0.0, GRAVITY_MPS2)))
    assert filter_.clone.matrix == pytest.approx(kept)
    assert filter_.state.covariance[np.ix_(clone, clone)] == pytest.approx(pose_block)
    assert filter_.estimate().pose_covariance.shape == (6, 6)
    assert ground_vehicle_update(filter_).accepted  # a 15-column measurement still fits
    assert filter_.projected_covariance(filter_.body_velocity_jacobian()).shape == (3, 3)
    filter_.drop_clone()
    assert filter_.state.covariance.shape == (15, 15) and filter_.clone is None
