"""The lidar correction's parts that need no KISS-ICP run: the measurement against a
map anchored at a cloned pose, and the removal of airborne returns (a simulated drive
registers real sweeps: test_odometry_selection)."""

from __future__ import annotations

import numpy as np
import pytest

from dynfusion_ros.core.odometry.filter import (
    CLONE_ATTITUDE,
    CLONE_POSITION,
    GRAVITY_MPS2,
    POSE_ERROR,
    ClonedPose,
    ImuFilter,
)
from dynfusion_ros.core.odometry.lidar_registration import _airborne, map_measurement
from dynfusion_ros.core.rotations import so3_exp, so3_log
from dynfusion_ros.core.types import ImuSample


def _at_rest(filter_: ImuFilter, seconds: float = 1.0) -> None:
    for k in range(round(seconds * 200) + 1):
        filter_.propagate(ImuSample(k * 5_000_000, np.zeros(3), np.array([0, 0, GRAVITY_MPS2])))


def _perturbed(pose: ClonedPose, error: np.ndarray) -> ClonedPose:
    """The true pose for an error (dp, dtheta) about a nominal one, as the filter has it."""
    return ClonedPose(pose.position + error[:3], pose.attitude @ so3_exp(error[3:]))


def test_the_map_measurement_jacobian_matches_finite_differences():
    """The registered pose is ``map_pose @ inv(anchor) @ pose``: its Jacobian on both
    the current pose's error and the anchor clone's, checked one direction at a time."""
    rng = np.random.default_rng(12)
    pose = ClonedPose(np.array([40.0, 12.0, 0.3]), so3_exp(np.array([0.02, -0.01, 0.8])))
    anchor = ClonedPose(np.array([5.0, -2.0, 0.1]), so3_exp(np.array([0.0, 0.01, 0.2])))
    map_pose = _perturbed(anchor, rng.normal(0.0, 0.05, 6)).matrix  # the map began a bit off
    shown, H = map_measurement(map_pose, anchor, pose.matrix, 21)
    columns = {
        index: k for k, index in enumerate(np.r_[POSE_ERROR, CLONE_POSITION, CLONE_ATTITUDE])
    }
    step = 1e-6
    for index, k in columns.items():
        error = np.zeros(12)
        error[k] = step
        moved = map_measurement(
            map_pose, _perturbed(anchor, error[6:]), _perturbed(pose, error[:6]).matrix, 21
        )[0]
        numeric = np.r_[moved[:2, 3] - shown[:2, 3], so3_log(shown[:3, :3].T @ moved[:3, :3])]
        assert numeric / step == pytest.approx(H[:, index], abs=1e-4), index


def test_a_map_measurement_cannot_make_the_filter_surer_than_where_the_map_began():
    """Registered again and again against a map laid at an uncertain pose, the filter
    learns its pose relative to the map, not better than the map's own place; taken as
    an absolute pose, the same measurements would collapse the position variance."""
    anchored, absolute = ImuFilter(), ImuFilter()
    for filter_ in (anchored, absolute):
        _at_rest(filter_)
        filter_.state.covariance[0:2, 0:2] += np.eye(2) * 0.5**2  # 0.5 m unsure here
    anchored.clone_pose()
    map_pose = anchored.pose
    noise = np.diag([0.05**2] * 2 + [0.003**2] * 3)
    for _ in range(50):
        H = map_measurement(map_pose, anchored.clone, anchored.pose, 21)[1]
        assert anchored.update("lidar", np.zeros(5), H, noise).accepted
        H_absolute = np.zeros((5, 15))
        H_absolute[:2, 0:2], H_absolute[2:, 6:9] = np.eye(2), np.eye(3)
        assert absolute.update("lidar", np.zeros(5), H_absolute, noise).accepted
    assert anchored.estimate().pose_covariance[0, 0] > 0.49**2
    assert absolute.estimate().pose_covariance[0, 0] < 0.01**2


def test_airborne_returns_go_and_surfaces_stay():
    """A wall 10 m ahead, sampled as the lidar would (0.35 deg x 1.3 deg), a lamp post
    at 14 m, a far facade, and 300 flakes scattered 2-12 m around the sensor: the flakes
    go, the post and the facade stay, the wall but for a corner voxel stays."""
    rng = np.random.default_rng(13)
    azimuth, elevation = np.meshgrid(
        np.radians(np.arange(-20, 20, 0.35)), np.radians([-4, -2.7, -1.4, 0, 1.3])
    )
    wall = np.c_[
        np.full(azimuth.size, 10.0),
        10.0 * np.tan(azimuth.ravel()),
        10.0 * np.tan(elevation.ravel()),
    ]
    post = np.c_[
        np.full(15, 14.0), np.repeat([0.0, 0.06, 0.12], 5), np.tile(np.linspace(-0.5, 0.5, 5), 3)
    ]
    facade = wall[::7] * 3.0  # beyond the near range: never taken as air
    direction = rng.normal(size=(300, 3))
    flakes = (
        direction / np.linalg.norm(direction, axis=1, keepdims=True) * rng.uniform(2, 12, (300, 1))
    )
    flagged = _airborne(np.vstack([wall, post, facade, flakes]))
    surfaces = len(wall) + len(post) + len(facade)
    assert flagged[:surfaces].mean() < 0.01  # a voxel at a surface's very edge may go
    assert not flagged[len(wall) : surfaces].any()
    assert flagged[surfaces:].mean() > 0.95


REGISTER_SWEEPS = """
import sys
import numpy as np
from dynfusion_ros.core.odometry.estimator import OdometryEstimator
from dynfusion_ros.ros.bag_frames import read_frames

mode = sys.argv[2]
estimator = OdometryEstimator()
for labelled in list(read_frames(sys.argv[1]))[:6]:
    scan = labelled.frame.lidar
    times = scan.fields.pop("time")
    if mode == "nan":
        scan.fields["time"] = np.where(np.arange(len(times)) % 7, times, np.nan)
    elif mode == "inf":
        scan.fields["time"] = np.where(np.arange(len(times)) % 7, times, np.inf)
    elif mode == "equal":
        scan.fields["time"] = np.full_like(times, 0.05)
    step = estimator.step(labelled.frame, ("lidar",))
    assert step.estimate is not None and np.isfinite(step.estimate.position).all()
print(dict(estimator.outcomes))
"""


@pytest.mark.parametrize("mode", ["none", "nan", "inf", "equal"])
def test_sweeps_without_usable_point_times_register_without_aborting(clear_bag, mode):
    """KISS-ICP's deskew divides by the spread of the point times and aborts the process
    (SOPHUS_ENSURE) on the NaN that makes: run in a child, so an abort fails one test."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", REGISTER_SWEEPS, str(clear_bag), mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "('lidar', 'accepted'): 5" in run.stdout, run.stdout  # all but the map's first
