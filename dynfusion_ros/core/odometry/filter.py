"""The odometry's prediction: an error-state Kalman filter (ESKF) driven by the IMU.

The nominal state is base_link's position ``p`` and velocity ``v`` in odom, its attitude
``R`` (odom from base_link) and the accelerometer and gyro biases. The covariance is kept
on a 15-dimensional *error* state (dp, dv, dtheta, dba, dbg), dtheta a small rotation in
base_link (true attitude ``R @ Exp(dtheta)``). The error stays near zero, so the
linearisation holds where it is used, and the attitude has three uncertain directions,
not a quaternion's four.

A correction that measures the pose against something the filter itself placed earlier
(the lidar against a local map laid down at the filter's pose) needs that earlier pose's
error in the state, or the filter takes a relative measurement for an absolute one and
its position covariance collapses while the map's own error is nowhere in it. So the
filter can keep one *clone* of the pose (stochastic cloning, Roumeliotis & Burdick 2002):
six more error states (its dp, dtheta) that propagation leaves alone, correlated with
the rest through the covariance, corrected with them.

Corrections (radar doppler, lidar registration, visual odometry) come in as
``update(name, residual, H, noise)`` and are tested against the prediction first: a
residual whose Mahalanobis distance lies beyond the chi-square quantile
``gate_probability`` is rejected and counted, as robot_localization's thresholds do.

Propagation is deferred: each IMU interval is queued, and the queue is integrated in
one vectorised pass when anything reads or corrects the state (once a frame in the
nodes). Sample by sample in Python it took 0.8 ms a frame (8 mJ by the energy profile,
more than half of what a frame that holds tracks costs); the arithmetic is the same, done
on arrays.

The IMU samples come in base_link's axes (the frame builder turns them with the IMU's
/tf_static rotation); the IMU's lever arm is neglected. For a mount above base_link on
a ground vehicle (the yaw rate is parallel to the lever arm) the centripetal term it
would add is zero.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from dynfusion_ros.core.rotations import matrix_quaternion, skew, so3_exp
from dynfusion_ros.core.types import NS_PER_S, ImuSample, OdometryEstimate

GRAVITY_MPS2 = 9.80665
GRAVITY = np.array([0.0, 0.0, -GRAVITY_MPS2])  # in odom (z up, REP-103)
STATE_SIZE = 15  # without a clone
POSITION, VELOCITY, ATTITUDE = slice(0, 3), slice(3, 6), slice(6, 9)
ACCEL_BIAS, GYRO_BIAS = slice(9, 12), slice(12, 15)
CLONE_POSITION, CLONE_ATTITUDE = slice(15, 18), slice(18, 21)
POSE_ERROR = np.r_[0:3, 6:9]  # dp, dtheta of the error state
MAX_SPECIFIC_FORCE_MPS2 = 16 * GRAVITY_MPS2  # beyond what any vehicle IMU reports
MAX_ANGULAR_RATE_RADPS = 35.0  # 2000 deg/s, the widest common gyro range
AT_REST_FORCE_MPS2 = 0.15  # |specific force| this close to g: the accelerometer shows gravity
MAX_START_TILT_RAD = math.radians(35.0)  # steeper than any road: the mount must be wrong
WARNINGS_KEPT = 8  # the filter's last warnings, for /diagnostics
MAX_QUEUED_INTERVALS = 1000  # integrate at the latest then (5 s at 200 Hz)


@dataclass(frozen=True)
class ImuNoise:
    """The IMU's errors (continuous-time densities, as data sheets give them) and how
    uncertain the state is when the filter starts."""

    accel_noise_density: float = 0.004  # m/s^2/sqrt(Hz)
    gyro_noise_density: float = 0.0005  # rad/s/sqrt(Hz)
    accel_bias_walk: float = 0.0006  # m/s^3/sqrt(Hz)
    gyro_bias_walk: float = 0.00004  # rad/s^2/sqrt(Hz)
    initial_velocity_sigma: float = 10.0  # m/s: the start speed is not known
    initial_attitude_sigma: float = 0.03  # rad, roll and pitch (yaw 0 defines odom)
    initial_accel_bias_sigma: float = 0.1  # m/s^2
    initial_gyro_bias_sigma: float = 0.005  # rad/s

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class Update:
    """What became of one correction: taken or rejected by the Mahalanobis test."""

    name: str
    accepted: bool
    distance_squared: float
    threshold: float


@dataclass
class ClonedPose:
    """The nominal part of a cloned pose; its error lives in the filter's covariance."""

    position: np.ndarray
    attitude: np.ndarray  # 3x3, odom from base_link

    @property
    def matrix(self) -> np.ndarray:
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = self.attitude, self.position
        return pose


@dataclass
class _State:
    stamp_ns: int
    position: np.ndarray
    velocity: np.ndarray
    attitude: np.ndarray  # 3x3, odom from base_link
    accel_bias: np.ndarray
    gyro_bias: np.ndarray
    covariance: np.ndarray  # 15x15, 21x21 while a clone is kept
    angular_rate: np.ndarray = field(default_factory=lambda: np.zeros(3))  # raw, base_link
    specific_force: np.ndarray = field(default_factory=lambda: np.zeros(3))  # raw, base_link
    sample_period_s: float = 0.005  # between the last two IMU samples
    clone: ClonedPose | None = None


class ImuFilter:
    """IMU propagation, gated corrections, the estimate with its covariance.

    ``skipped`` counts the IMU samples not used and ``rejected`` the corrections the
    gate refused, by reason, for /diagnostics; ``warnings`` the last few things worth
    saying there (a gap bridged), with their figures."""

    def __init__(
        self,
        noise: ImuNoise | None = None,
        *,
        max_gap_s: float = 0.5,
        gate_probability: float = 0.999,
    ) -> None:
        if not 0.5 <= gate_probability < 1.0:
            raise ValueError(f"gate_probability must be in [0.5, 1), got {gate_probability}")
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be positive, got {max_gap_s}")
        self.noise = noise or ImuNoise()
        self.max_gap_ns = round(max_gap_s * NS_PER_S)
        self.gate_probability = gate_probability
        self._state: _State | None = None
        self._queued: list[tuple[float, np.ndarray, np.ndarray]] = []  # dt, rate, force
        self._noise_rates = np.concatenate(  # Q per second of propagation, diagonal
            [
                np.zeros(3),
                np.full(3, self.noise.accel_noise_density**2),
                np.full(3, self.noise.gyro_noise_density**2),
                np.full(3, self.noise.accel_bias_walk**2),
                np.full(3, self.noise.gyro_bias_walk**2),
            ]
        )
        self.skipped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.warnings: deque[str] = deque(maxlen=WARNINGS_KEPT)

    @property
    def started(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> _State | None:
        """The state with every queued IMU interval integrated."""
        if self._queued:
            self._integrate_queued()
        return self._state

    def reset(self) -> None:
        """Forget the state (a time jump): the next IMU sample starts the filter again."""
        self._state = None
        self._queued.clear()

    # --- prediction -----------------------------------------------------------------

    def propagate(self, sample: ImuSample) -> bool:
        """Take one IMU sample; False (and counted in ``skipped``) when it is unusable."""
        problem = _implausible(sample.linear_acceleration, sample.angular_velocity)
        if problem:
            self.skipped[problem] += 1
            return False
        force, rate = sample.linear_acceleration, sample.angular_velocity
        state = self._state
        if state is None:
            problem = _start_refusal(force)
            if problem:
                self.skipped[problem] += 1
                return False
            self._state = self._start(sample.stamp_ns, force, rate)
            return True
        if sample.stamp_ns <= state.stamp_ns:
            self.skipped["stamp not after the previous sample (out of order)"] += 1
            return False
        gap = sample.stamp_ns - state.stamp_ns
        self._advance(gap)
        if gap <= self.max_gap_ns:
            state.sample_period_s = gap / NS_PER_S
        state.stamp_ns, state.angular_rate, state.specific_force = sample.stamp_ns, rate, force
        return True

    def propagate_to(self, stamp_ns: int) -> None:
        """Carry the state forward to ``stamp_ns`` on the last IMU reading (a frame
        stamp a few ms after the newest sample); nothing when it is not later."""
        state = self._state
        if state is not None and stamp_ns > state.stamp_ns:
            self._advance(stamp_ns - state.stamp_ns)
            state.stamp_ns = stamp_ns

    def _advance(self, gap_ns: int) -> None:
        """Queue the interval on the last readings (zero-order hold), or bridge a gap."""
        if gap_ns > self.max_gap_ns:
            self._bridge(gap_ns)
            return
        state = self._state
        self._queued.append((gap_ns / NS_PER_S, state.angular_rate, state.specific_force))
        if len(self._queued) >= MAX_QUEUED_INTERVALS:
            self._integrate_queued()

    def _start(self, stamp_ns: int, force: np.ndarray, rate: np.ndarray) -> _State:
        """Roll and pitch from gravity when the accelerometer shows only gravity, else
        level (a vehicle that starts while accelerating); yaw 0 defines odom."""
        attitude = np.eye(3)
        if abs(np.linalg.norm(force) - GRAVITY_MPS2) < AT_REST_FORCE_MPS2:
            roll = math.atan2(force[1], force[2])
            pitch = math.atan2(-force[0], math.hypot(force[1], force[2]))
            attitude = so3_exp(np.array([0.0, pitch, 0.0])) @ so3_exp(np.array([roll, 0.0, 0.0]))
        noise = self.noise
        variances = np.concatenate(
            [
                np.zeros(3),
                np.full(3, noise.initial_velocity_sigma**2),
                [noise.initial_attitude_sigma**2] * 2 + [1e-8],
                np.full(3, noise.initial_accel_bias_sigma**2),
                np.full(3, noise.initial_gyro_bias_sigma**2),
            ]
        )
        return _State(
            stamp_ns,
            np.zeros(3),
            np.zeros(3),
            attitude,
            np.zeros(3),
            np.zeros(3),
            np.diag(variances),
            rate,
            force,
        )

    def _integrate_queued(self) -> None:
        """Integrate the queued intervals: the nominal state in closed form over arrays
        (only the attitudes chain sample by sample), the covariance through each
        interval's transition F (a clone's block stays where it is) plus its noise."""
        state, queued = self._state, self._queued
        dt = np.array([interval[0] for interval in queued])
        omega = np.array([interval[1] for interval in queued]) - state.gyro_bias
        accel_base = np.array([interval[2] for interval in queued]) - state.accel_bias
        queued.clear()
        steps = so3_exp(omega * dt[:, None])
        attitudes = np.empty((len(dt) + 1, 3, 3))
        attitudes[0] = state.attitude
        for k, step in enumerate(steps):
            attitudes[k + 1] = attitudes[k] @ step
        R = attitudes[:-1]
        accel = (R @ accel_base[:, :, None])[:, :, 0] + GRAVITY
        dv = accel * dt[:, None]
        velocity_before = state.velocity + np.cumsum(dv, axis=0) - dv
        state.position = state.position + ((velocity_before + 0.5 * dv) * dt[:, None]).sum(0)
        state.velocity = state.velocity + dv.sum(0)
        state.attitude = attitudes[-1]
        size = len(state.covariance)
        span = dt[:, None, None]
        F = np.tile(np.eye(size), (len(dt), 1, 1))
        F[:, POSITION, VELOCITY] = np.eye(3) * span
        F[:, VELOCITY, ATTITUDE] = -R @ skew(accel_base) * span
        F[:, VELOCITY, ACCEL_BIAS] = -R * span
        F[:, ATTITUDE, ATTITUDE] = steps.transpose(0, 2, 1)
        F[:, ATTITUDE, GYRO_BIAS] = -np.eye(3) * span
        noise = self._noise_rates * dt[:, None]
        covariance, diagonal = state.covariance, np.diag_indices(STATE_SIZE)
        for transition, added in zip(F, noise, strict=True):
            covariance = transition @ covariance @ transition.T
            covariance[diagonal] += added
        state.covariance = 0.5 * (covariance + covariance.T)

    def _bridge(self, gap_ns: int) -> None:
        """No IMU for longer than ``max_gap_s``: integrating one old reading over the gap
        would be a guess. Position moves on at the last velocity; velocity and position
        uncertainty grow by what the start's speed uncertainty allows."""
        state, gap_s = self.state, gap_ns / NS_PER_S
        self.warnings.append(
            f"IMU gap of {gap_s:.2f} s (more than {self.max_gap_ns / NS_PER_S:.2f} s): "
            "bridged at constant velocity, velocity uncertainty re-opened"
        )
        self.skipped["gap bridged"] += 1
        sigma = self.noise.initial_velocity_sigma
        state.position = state.position + state.velocity * gap_s
        state.covariance[POSITION, POSITION] += np.eye(3) * (sigma * gap_s) ** 2
        self.reopen_velocity()

    def reopen_velocity(self) -> None:
        """Let the next velocity measurement set the velocity again: after a gap, or
        when the filter has grown sure of a wrong one and refuses every correction."""
        sigma = self.noise.initial_velocity_sigma
        self._require().covariance[VELOCITY, VELOCITY] += np.eye(3) * sigma**2

    # --- correction -----------------------------------------------------------------

    def update(self, name: str, residual: np.ndarray, H: np.ndarray, noise: np.ndarray) -> Update:
        """Correct with a measurement's residual (measured minus predicted), its Jacobian
        on the error state and its noise covariance, if it passes the gate."""
        state = self._require()
        residual = np.asarray(residual, float)
        H = self._padded(H)
        S = H @ state.covariance @ H.T + noise
        try:
            distance = float(residual @ np.linalg.solve(S, residual))
        except np.linalg.LinAlgError:
            distance = math.inf
        threshold = _gate_threshold(self.gate_probability, len(residual))
        if not (math.isfinite(distance) and distance <= threshold):
            self.rejected[name] += 1
            return Update(name, False, distance, threshold)
        gain = np.linalg.solve(S, H @ state.covariance).T
        correction = gain @ residual
        keep = np.eye(len(H.T)) - gain @ H
        covariance = keep @ state.covariance @ keep.T + gain @ noise @ gain.T  # Joseph form
        state.covariance = 0.5 * (covariance + covariance.T)
        state.position = state.position + correction[POSITION]
        state.velocity = state.velocity + correction[VELOCITY]
        state.attitude = state.attitude @ so3_exp(correction[ATTITUDE])
        state.accel_bias = state.accel_bias + correction[ACCEL_BIAS]
        state.gyro_bias = state.gyro_bias + correction[GYRO_BIAS]
        if state.clone is not None:
            state.clone.position = state.clone.position + correction[CLONE_POSITION]
            state.clone.attitude = state.clone.attitude @ so3_exp(correction[CLONE_ATTITUDE])
        self.accepted[name] += 1
        return Update(name, True, distance, threshold)

    # --- the clone --------------------------------------------------------------------

    @property
    def clone(self) -> ClonedPose | None:
        """The pose kept by ``clone_pose``, as corrected since; None when none is kept."""
        return self._require().clone

    def clone_pose(self) -> None:
        """Keep the current pose (replacing an earlier clone): its error starts as a
        copy of the pose error, so fully correlated with it, and stays while the vehicle
        moves on."""
        state = self._require()
        self.drop_clone()
        duplicate = np.vstack([np.eye(STATE_SIZE), np.eye(STATE_SIZE)[POSE_ERROR]])
        state.covariance = duplicate @ state.covariance @ duplicate.T
        state.clone = ClonedPose(state.position.copy(), state.attitude.copy())

    def drop_clone(self) -> None:
        """Forget the clone (marginalise it: the other states keep what it taught them)."""
        state = self._require()
        state.covariance = state.covariance[:STATE_SIZE, :STATE_SIZE].copy()
        state.clone = None

    def disturb_clone(self, variances: np.ndarray) -> None:
        """Add ``variances`` (dp, dtheta of the clone, 6) to the clone's covariance:
        what it stands for moves a little (a local map re-laid as the vehicle drives)."""
        state = self._require()
        if state.clone is None:
            raise RuntimeError("no clone is kept: clone_pose() first")
        index = np.r_[CLONE_POSITION, CLONE_ATTITUDE]
        state.covariance[index, index] += np.asarray(variances, float)

    def projected_covariance(self, H: np.ndarray) -> np.ndarray:
        """``H P H^T``: the covariance of what ``H`` measures, as the filter predicts it."""
        H = self._padded(H)
        return H @ self._require().covariance @ H.T

    def _padded(self, H: np.ndarray) -> np.ndarray:
        """A Jacobian on the 15 current states, given zero columns for a clone."""
        missing = len(self._require().covariance) - H.shape[1]
        return np.hstack([H, np.zeros((len(H), missing))]) if missing > 0 else H

    def _require(self) -> _State:
        state = self.state
        if state is None:
            raise RuntimeError("the filter has not started: it needs an IMU sample first")
        return state

    # --- what the corrections and the publisher read ----------------------------------

    @property
    def angular_velocity(self) -> np.ndarray:
        """Bias-corrected angular rate in base_link (rad/s)."""
        state = self._require()
        return state.angular_rate - state.gyro_bias

    @property
    def angular_velocity_noise(self) -> float:
        """Variance (per axis, (rad/s)^2) of ``angular_velocity`` that no state holds:
        it is one raw sample, with the gyro's white noise in it."""
        return self.noise.gyro_noise_density**2 / self._require().sample_period_s

    @property
    def pose(self) -> np.ndarray:
        """base_link's pose in odom, 4x4."""
        state = self._require()
        pose = np.eye(4)
        pose[:3, :3] = state.attitude
        pose[:3, 3] = state.position
        return pose

    @property
    def body_velocity(self) -> np.ndarray:
        """base_link's velocity in base_link (m/s)."""
        state = self._require()
        return state.attitude.T @ state.velocity

    def body_velocity_jacobian(self) -> np.ndarray:
        """(3, 15): how ``body_velocity`` moves with the error state (velocity seen
        through the attitude, and the attitude error itself)."""
        state = self._require()
        H = np.zeros((3, STATE_SIZE))
        H[:, VELOCITY] = state.attitude.T
        H[:, ATTITUDE] = skew(state.attitude.T @ state.velocity)
        return H

    def estimate(self) -> OdometryEstimate:
        """Pose in odom and twist in base_link with 6x6 covariances in nav_msgs' order
        (x, y, z, then rotations about x, y, z: odom's axes for the pose, base_link's
        for the twist)."""
        state = self._require()
        R, P = state.attitude, state.covariance[:STATE_SIZE, :STATE_SIZE]
        to_odom = np.eye(6)
        to_odom[3:, 3:] = R  # dtheta is in base_link; the pose covariance is about odom's axes
        pose_covariance = to_odom @ P[np.ix_(POSE_ERROR, POSE_ERROR)] @ to_odom.T
        body_velocity = R.T @ state.velocity
        twist_jacobian = np.zeros((6, STATE_SIZE))
        twist_jacobian[:3, VELOCITY] = R.T
        twist_jacobian[:3, ATTITUDE] = skew(body_velocity)
        twist_jacobian[3:, GYRO_BIAS] = -np.eye(3)
        twist_covariance = twist_jacobian @ P @ twist_jacobian.T
        twist_covariance[3:, 3:] += np.eye(3) * self.angular_velocity_noise
        return OdometryEstimate(
            stamp_ns=state.stamp_ns,
            position=state.position,
            orientation=matrix_quaternion(R),
            linear_velocity=body_velocity,
            angular_velocity=self.angular_velocity,
            pose_covariance=0.5 * (pose_covariance + pose_covariance.T),
            twist_covariance=0.5 * (twist_covariance + twist_covariance.T),
        )


def correlated_error_share(interval_s: float, correlation_s: float) -> float:
    """How much to inflate the noise of a measurement taken ``interval_s`` after the
    previous one when its error stays about the same for ``correlation_s`` (the same
    structures in view, the same map): such measurements share most of their error, and
    taken as independent they would make the filter surer with every one (the usual
    variance inflation for time-correlated errors). 1 for measurements far apart."""
    return max(1.0, correlation_s / max(interval_s, 1e-3))


def _start_refusal(force: np.ndarray) -> str:
    """Why the filter must not start on this sample: a ground vehicle starts upright, so
    gravity read upside down or steeply tilted means the IMU's axes are not base_link's
    (a mount missing from tf, or wrong). Starting anyway would integrate gravity the
    wrong way and diverge by hundreds of metres."""
    tilt = math.acos(max(-1.0, min(1.0, force[2] / max(float(np.linalg.norm(force)), 1e-9))))
    if force[2] <= 0:
        return "upside down at start (gravity not along +z): is the IMU's mount in tf?"
    if abs(np.linalg.norm(force) - GRAVITY_MPS2) < AT_REST_FORCE_MPS2 and tilt > MAX_START_TILT_RAD:
        return "tilted steeply at start: is the IMU's mount in tf?"
    return ""


@functools.lru_cache(maxsize=64)
def _gate_threshold(probability: float, dimensions: int) -> float:
    """The chi-square quantile a residual's Mahalanobis distance is gated at (scipy's ppf
    costs 80 us, a few times a frame)."""
    return float(chi2.ppf(probability, dimensions))


def _implausible(force: np.ndarray, rate: np.ndarray) -> str:
    """Why a sample is unusable, "" when it is fine. On Python floats: every sample
    passes here, and numpy's per-call cost made this a quarter of the propagation."""
    force_norm, rate_norm = math.hypot(*force.tolist()), math.hypot(*rate.tolist())
    if not (math.isfinite(force_norm) and math.isfinite(rate_norm)):
        return "NaN or infinite value"
    if force_norm > MAX_SPECIFIC_FORCE_MPS2:
        return "acceleration beyond 16 g"
    if rate_norm > MAX_ANGULAR_RATE_RADPS:
        return "angular rate beyond 2000 deg/s"
    return ""
