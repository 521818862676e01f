"""Selective odometry: which corrections a frame runs (usability, interval, budget), the
estimator that runs them, and their place in the pipeline's budget and energy record."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from test_energy import profile

from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.energy import EnergyProfileError
from dynfusion_ros.core.gate import Gate
from dynfusion_ros.core.odometry.estimator import OdometryEstimator
from dynfusion_ros.core.odometry.planner import (
    Allowance,
    CorrectionLimits,
    CorrectionPlanner,
    OdometryPolicy,
    unusable_reason,
)
from dynfusion_ros.core.pipeline import DynamicFusionPipeline
from dynfusion_ros.core.types import PointScan

PRICES = {"radar": 0.01, "camera": 0.06, "lidar": 0.12}
PROFILE = profile(odometry_j=PRICES)
PERIOD_NS = 100_000_000  # 10 Hz frames


def _features(
    stamp_ns: int = 0, *, lidar=True, radar=True, near=0.1, returns=0.8, camera=False, sharp=0.05
):
    values = np.zeros(len(FEATURE_NAMES))
    values[FEATURE_NAMES.index("camera_available")] = float(camera)
    values[FEATURE_NAMES.index("camera_sharpness")] = sharp
    values[FEATURE_NAMES.index("lidar_available")] = float(lidar)
    values[FEATURE_NAMES.index("radar_available")] = float(radar)
    values[FEATURE_NAMES.index("lidar_near_fraction")] = near
    values[FEATURE_NAMES.index("lidar_return_ratio")] = returns
    return ContextFeatures(stamp_ns, values)


def _plan(policy: str, allowance_j=1.0, frames=1, limits=None, frame_j=None, **features):
    """``allowance_j`` a frame, as a mean and on the frame (or ``frame_j`` on the frame)."""
    planner, limits = CorrectionPlanner(), limits or CorrectionLimits()
    parsed = OdometryPolicy.parse(policy)
    allowance = Allowance(allowance_j, allowance_j if frame_j is None else frame_j)
    return [
        planner.plan(_features(k * PERIOD_NS, **features), parsed, allowance, PRICES, limits)
        for k in range(frames)
    ]


def test_policies_parse_and_bad_ones_say_why():
    assert OdometryPolicy.parse("lidar+radar").corrections == ("radar", "lidar")
    assert OdometryPolicy.parse(" none ").kind == "none"
    with pytest.raises(ValueError, match="unknown odometry policy 'sonar'"):
        OdometryPolicy.parse("sonar")
    with pytest.raises(ValueError, match="twice"):
        OdometryPolicy.parse("radar+radar")
    with pytest.raises(ValueError, match=r"lidar_interval_s must lie in \[0, 10\]"):
        CorrectionLimits(lidar_interval_s=-1.0)


def test_dynamic_registers_lidar_once_per_interval_and_radar_every_frame():
    plans = _plan("dynamic", frames=12)  # 1.1 s of frames, interval 0.5 s
    assert all("radar" in plan for plan in plans)
    assert [k for k, plan in enumerate(plans) if "lidar" in plan] == [0, 5, 10]
    every_sweep = _plan("dynamic", frames=3, limits=CorrectionLimits(lidar_interval_s=0.0))
    assert every_sweep == [("radar", "lidar")] * 3
    assert _plan("all", frames=3) == [("radar", "lidar")] * 3
    assert _plan("none") == [()]


def test_blind_or_foggy_sweeps_and_missing_sensors_are_left_out():
    assert _plan("dynamic", near=0.6) == [("radar",)]  # mostly backscatter
    assert _plan("all", returns=0.1) == [("radar",)]  # dropped out
    assert _plan("radar+lidar", lidar=False) == [("radar",)]
    assert _plan("dynamic", radar=False) == [("lidar",)]


def test_the_camera_stands_in_for_a_missing_radar_when_it_can_see():
    assert _plan("dynamic", camera=True) == [("radar", "lidar")]  # the radar is cheaper
    assert _plan("dynamic", camera=True, radar=False) == [("camera", "lidar")]
    assert _plan("dynamic", camera=True, radar=False, allowance_j=0.1) == [("camera",)]
    assert _plan("all", camera=True) == [("radar", "camera", "lidar")]
    foggy = _plan("camera+radar", camera=True, sharp=0.01)
    assert foggy == [("radar",)]
    reason = unusable_reason("camera", _features(camera=True, sharp=0.01), CorrectionLimits())
    assert reason == "camera image too blurred to track (sharpness 0.010)"


def test_a_tight_allowance_keeps_the_cheap_correction_only():
    assert _plan("dynamic", allowance_j=0.1) == [("radar",)]  # radar 0.01, lidar 0.12
    assert _plan("dynamic", allowance_j=0.13) == [("radar", "lidar")]
    assert _plan("all", allowance_j=0.01) == [("radar", "lidar")]  # all ignores the budget


def test_the_mean_allowance_spreads_a_correction_over_the_frames_since_it_ran():
    """Lidar 0.12 J against a mean allowance of 0.1 J: not on the first frame, but on the
    second (0.06 a frame since the start) and then every interval (0.024 a frame), as
    long as the frame itself can pay its full price."""
    plans = _plan("dynamic", allowance_j=0.1, frame_j=0.2, frames=12)
    assert [k for k, plan in enumerate(plans) if "lidar" in plan] == [1, 6, 11]
    assert all("radar" in plan for plan in plans)
    assert _plan("dynamic", allowance_j=0.1, frame_j=0.1, frames=12) == [("radar",)] * 12


def test_odometry_is_paid_from_the_frame_budget(clear_frames):
    budget = 0.2
    flow = DynamicFusionPipeline(
        None, Gate(PROFILE), policy="dynamic", budget_j=budget, odometry_policy="radar"
    )
    choice = flow.choose(clear_frames[0].frame)
    selection = choice.selection
    assert selection.odometry_corrections == ("radar",)
    assert choice.decision.energy_j <= budget - PRICES["radar"]
    assert selection.predicted_energy_j == pytest.approx(choice.decision.energy_j + 0.01)
    cheapest = Gate(PROFILE).cheapest_usable_j(choice.features)  # the radar branch, 0.021 J
    for spare, planned in ((0.004, ()), (0.019, ("radar",))):  # detection is paid first
        tight = DynamicFusionPipeline(
            None, Gate(PROFILE), budget_j=cheapest + spare, odometry_policy="dynamic"
        )
        assert tight.choose(clear_frames[0].frame).selection.odometry_corrections == planned
    free = DynamicFusionPipeline(None, Gate(PROFILE), budget_j=budget)  # plans no odometry
    assert free.choose(clear_frames[0].frame).selection.odometry_corrections == ()
    unknown = type(selection)(**{**vars(selection), "odometry_corrections": ("sonar",)})
    with pytest.raises(ValueError, match="unknown odometry corrections"):
        flow.adopt(unknown)


def test_an_unpriced_correction_is_a_start_up_error():
    with pytest.raises(EnergyProfileError, match="no energy for odometry correction"):
        DynamicFusionPipeline(None, Gate(profile()), odometry_policy="dynamic")
    DynamicFusionPipeline(None, Gate(profile()), odometry_policy="none")  # needs no price


def test_corrections_that_cannot_use_their_data_say_why(clear_frames):
    estimator = OdometryEstimator()
    first = clear_frames[0].frame
    assert estimator.step(first, ("radar", "lidar")).estimate is not None
    second = copy.copy(clear_frames[1].frame)  # the fixture is shared: change a copy
    lidar = second.lidar
    second.lidar = PointScan(lidar.stamp_ns, lidar.xyz[:50], T_base_sensor=lidar.T_base_sensor)
    second.radar = None
    step = estimator.step(second, ("radar", "lidar"))
    assert step.outcomes["radar"] == "no radar data in this frame"
    assert re.fullmatch(r"\d+ lidar points \(at least 500 needed\)", step.outcomes["lidar"])
    assert estimator.outcomes["lidar", "N lidar points (at least N needed)"] == 1  # counted by kind
    assert step.estimate is not None and np.isfinite(step.estimate.position).all()
    with pytest.raises(ValueError, match="unknown odometry corrections"):
        estimator.step(second, ("sonar",))


@pytest.mark.slow
def test_selected_corrections_beat_the_imu_alone_on_a_simulated_drive(simulate_bag):
    from dynfusion_ros.eval.trajectory import Trajectory, read_odometry, trajectory_errors
    from dynfusion_ros.ros.bag_frames import read_frames

    bag = simulate_bag("clear", 12.0, 5)
    truth = read_odometry(bag)
    frames = [labelled.frame for labelled in read_frames(bag)]
    errors, estimators = {}, {}
    for corrections in ((), ("radar",), ("camera",), ("radar", "lidar")):
        estimator, estimates = OdometryEstimator(), []
        for frame in frames:
            step = estimator.step(frame, corrections)
            if step.estimate is not None:
                estimates.append(step.estimate)
        errors[corrections] = trajectory_errors(truth, Trajectory.from_estimates(estimates))
        estimators[corrections] = estimator
    imu, radar, both = errors[()], errors[("radar",)], errors[("radar", "lidar")]
    assert both.poses >= 100 and both.path_length_m > 30.0
    assert radar.ate_pct < 1.0 and radar.ate_rmse_m < 0.5 * imu.ate_rmse_m, (radar, imu)
    assert both.ate_rmse_m < radar.ate_rmse_m, (both, radar)
    outcomes = estimators[("radar", "lidar")].outcomes
    assert outcomes["lidar", "accepted"] > 0.9 * len(frames), outcomes
    camera = errors[("camera",)]
    assert camera.ate_pct < 2.0 and camera.ate_rmse_m < 0.5 * imu.ate_rmse_m, (camera, imu)
    outcomes = estimators[("camera",)].outcomes
    assert outcomes["camera", "accepted"] > 0.7 * len(frames), outcomes


def test_a_filter_misled_until_it_refuses_the_radar_lets_the_radar_back_in(clear_frames):
    estimator = OdometryEstimator()
    estimator.step(clear_frames[0].frame, ())
    velocity = estimator.filter.state.covariance[3:6, 3:6].copy()
    for _ in range(9):
        estimator._watch_rejections("radar", "rejected")
    assert np.array_equal(estimator.filter.state.covariance[3:6, 3:6], velocity)
    estimator._watch_rejections("radar", "rejected")  # the tenth in a row
    assert np.all(np.diag(estimator.filter.state.covariance[3:6, 3:6]) > np.diag(velocity) + 1)
    assert estimator.outcomes["filter", "velocity re-opened after radar rejections"] == 1


def test_nees_of_honest_and_overconfident_covariances():
    from dynfusion_ros.core.types import OdometryEstimate
    from dynfusion_ros.eval.trajectory import velocity_consistency

    rng = np.random.default_rng(3)
    covariance = np.diag([0.04, 0.01, 0.0025])
    truth, honest, overconfident = [], [], []
    for k in range(400):
        stamp = k * PERIOD_NS
        truth.append(OdometryEstimate(stamp, np.zeros(3), np.array([0, 0, 0, 1.0])))
        error = rng.multivariate_normal(np.zeros(3), covariance)
        for estimates, scale in ((honest, 1.0), (overconfident, 0.25)):
            twist = np.eye(6)
            twist[:3, :3] = scale * covariance
            estimates.append(
                OdometryEstimate(
                    stamp, np.zeros(3), np.array([0, 0, 0, 1.0]), error, twist_covariance=twist
                )
            )
    fair = velocity_consistency(truth, honest)
    assert fair.dimension == 3 and fair.samples == 400 and fair.consistent, fair
    assert velocity_consistency(truth, overconfident).mean_nees > fair.high


def test_a_correction_that_raises_fails_alone_and_the_frame_goes_on(clear_frames):
    """OpenCV raising inside the camera correction (here: a lens it cannot take, past the
    CameraInfo check) costs that correction, not the frame's other corrections."""
    estimator = OdometryEstimator()
    estimator.step(clear_frames[0].frame, ("radar", "camera"))
    frame = copy.copy(clear_frames[1].frame)
    camera = copy.copy(frame.camera)
    model = copy.copy(camera.model)
    object.__setattr__(model, "D", np.array([0.1, 0.2, 0.3]))  # 3: OpenCV refuses it
    object.__setattr__(camera, "model", model)
    frame.camera = camera
    step = estimator.step(frame, ("radar", "camera"))
    assert step.outcomes["camera"] == "failed (error)"  # cv2.error
    assert step.outcomes["radar"] in ("accepted", "rejected")
    assert "camera" in estimator.failures and step.estimate is not None
    assert estimator.outcomes["camera", "failed (error)"] == 1
