"""``OdometryEstimator``: one frame of odometry, with the corrections a selection chose.

Per frame: the IMU samples since the previous frame drive the filter to the frame stamp,
the ground-vehicle constraint (free) holds height and side-slip, and then each chosen
correction runs on its sensor's data. The camera correction measures the motion since
the previous image, so every frame's image is kept (a reference, no work), whether or
not the correction ran on it. A correction that cannot use its data says why
(too few returns, no consensus, a blind sweep); one the filter finds inconsistent with
its prediction is rejected by the chi-square gate. One that raises (OpenCV on an image
it cannot take, a singular system) has failed: the frame goes on with the others, its
detections untouched. Every outcome is counted for /diagnostics, and ``failures`` keeps
the last error of each correction.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.odometry.constraints import ground_vehicle_update
from dynfusion_ros.core.odometry.filter import ImuFilter, ImuNoise, Update
from dynfusion_ros.core.odometry.lidar_registration import LidarRegistration
from dynfusion_ros.core.odometry.radar_velocity import fit_radar_velocity, radar_velocity_update
from dynfusion_ros.core.odometry.visual_odometry import VisualOdometry
from dynfusion_ros.core.types import OdometryEstimate, SensorFrame

CORRECTIONS: tuple[str, ...] = ("radar", "camera", "lidar")
"""Every odometry correction, cheapest first. Each reads the sensor of its name."""

ACCEPTED, REJECTED = "accepted", "rejected"
FILTER, DIVERGED = "filter", "non-finite state: re-initialised"
NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?%?(?![\w-])")  # 12, 0.25, 40%; not 3-D
REJECTIONS_TO_RECOVER = 10  # in a row, of one correction: the filter, not the sensor, is off


@dataclass(frozen=True)
class OdometryStep:
    """What one frame did to the odometry."""

    estimate: OdometryEstimate | None  # None until the first IMU sample
    ran: tuple[str, ...]  # corrections that ran on this frame
    outcomes: dict[str, str] = field(default_factory=dict)  # accepted, rejected or why not


class OdometryEstimator:
    """The IMU filter and its corrections, fed one ``SensorFrame`` at a time."""

    def __init__(
        self, noise: ImuNoise | None = None, *, gate_probability: float = 0.999, seed: int = 0
    ) -> None:
        self.filter = ImuFilter(noise, gate_probability=gate_probability)
        self.rng = np.random.default_rng(seed)  # RANSAC: seeded, so a replay repeats
        self.lidar: LidarRegistration | None = None
        self.visual = VisualOdometry(rng=self.rng)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (correction, outcome)
        self.failures: dict[str, str] = {}  # correction -> its last error
        self.rejected_in_row: Counter[str] = Counter()

    def warm_up(self) -> None:
        """Load what the first lidar registration would (KISS-ICP and its configuration
        take about 0.2 s to import): a node does it at start-up, so its first frames are
        not late for it."""
        import cv2  # noqa: F401  (visual odometry's)

        LidarRegistration(np.eye(4))

    def reset(self) -> None:
        """Forget the stream (a new bag, a backwards time jump)."""
        self.filter.reset()
        self.lidar = None
        self.visual.restart()
        self.rejected_in_row.clear()

    def step(self, frame: SensorFrame, corrections: Sequence[str]) -> OdometryStep:
        """Propagate to the frame and apply ``corrections`` (names from CORRECTIONS)."""
        unknown = set(corrections) - set(CORRECTIONS)
        if unknown:
            raise ValueError(f"unknown odometry corrections {sorted(unknown)}; use {CORRECTIONS}")
        filter_ = self.filter
        for sample in frame.imu:
            filter_.propagate(sample)
        if not filter_.started:
            return OdometryStep(None, ())
        filter_.propagate_to(frame.stamp_ns)
        ground_vehicle_update(filter_)
        outcomes = {name: self._correct(name, frame) for name in corrections}
        self.visual.remember(frame, filter_)
        for name, outcome in outcomes.items():
            self.outcomes[name, outcome_kind(outcome)] += 1
            self._watch_rejections(name, outcome)
        estimate = filter_.estimate()
        if not _finite(estimate):  # never published: start again from the next samples
            self.reset()
            self.outcomes[FILTER, DIVERGED] += 1
            return OdometryStep(None, tuple(corrections), {**outcomes, FILTER: DIVERGED})
        return OdometryStep(estimate, tuple(corrections), outcomes)

    def _watch_rejections(self, name: str, outcome: str) -> None:
        """A correction refused frame after frame, from a sensor that delivers, means
        the filter has grown sure of a wrong state (another sensor misled it, as lidar
        does in snow) and, left alone, would refuse it for good. Recover what that
        correction measures: the velocity for the radar and the camera; for the lidar,
        its local map (a map built while the filter was wrong holds the error)."""
        if outcome != REJECTED:
            if outcome == ACCEPTED:
                self.rejected_in_row[name] = 0
            return
        self.rejected_in_row[name] += 1
        if self.rejected_in_row[name] < REJECTIONS_TO_RECOVER:
            return
        self.rejected_in_row[name] = 0
        if name in ("radar", "camera"):
            self.filter.reopen_velocity()
            self.outcomes[FILTER, f"velocity re-opened after {name} rejections"] += 1
        elif self.lidar is not None:
            self.lidar.restart()
            self.outcomes[FILTER, "lidar map restarted after rejections"] += 1

    def _correct(self, name: str, frame: SensorFrame) -> str:
        """Run one correction: accepted, rejected, or why it could not run."""
        data = getattr(frame, name)
        if data is None:
            return f"no {name} data in this frame"
        try:
            update = self._update(name, data)
        except Exception as error:  # one correction must not cost the frame
            self.failures[name] = f"{type(error).__name__}: {error}"
            return f"failed ({type(error).__name__})"
        if isinstance(update, str):
            return update
        return ACCEPTED if update.accepted else REJECTED

    def _update(self, name: str, data) -> Update | str:
        if name == "radar":
            fit = fit_radar_velocity(data, self.rng)
            if isinstance(fit, str):
                return fit
            return radar_velocity_update(self.filter, fit, data.T_base_sensor)
        if name == "camera":
            return self.visual.correct(self.filter, data)
        if self.lidar is None:
            self.lidar = LidarRegistration(data.T_base_sensor)
        return self.lidar.correct(self.filter, data)


def outcome_kind(outcome: str) -> str:
    """An outcome with its figures taken out ("12 corners tracked" -> "N corners
    tracked"), so the counts on /diagnostics stay a handful of kinds."""
    return NUMBER.sub("N", outcome)


def _finite(estimate: OdometryEstimate) -> bool:
    parts = (estimate.position, estimate.orientation, estimate.linear_velocity)
    covariances = (estimate.pose_covariance, estimate.twist_covariance)
    return all(np.isfinite(part).all() for part in (*parts, *covariances))
