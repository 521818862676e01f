"""The ego vehicle's drive: a speed plan along the route, with stops and car following.

The ego follows its lane centreline exactly, so the only control is longitudinal:
acceleration, piecewise constant over 5 ms steps and jerk-limited. Position, heading,
velocity, acceleration and yaw rate are then exact at any instant, which is what the IMU
model needs and what ground-truth odometry reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.sim.road import RoadNetwork
from dynfusion_ros.sim.world import Traffic

STEP_S = 0.005
CONTROL_EVERY = 10  # control update every 50 ms
CRUISE_SPEED = 12.5  # m/s, 45 km/h
LATERAL_LIMIT = 2.0  # m/s^2 in curves
COMFORT_DECEL = 2.0  # m/s^2 planning deceleration
MAX_ACCEL, MAX_DECEL, MAX_JERK = 1.8, 5.0, 6.0
START_HOLD_S = 1.0
FRONT_OVERHANG = 3.7  # base_link (rear axle) to front bumper, m


@dataclass(frozen=True)
class EgoState:
    """Ego kinematics at given times (arrays), world frame; base_link on the ground."""

    t: np.ndarray
    xy: np.ndarray  # (N, 2)
    yaw: np.ndarray
    speed: np.ndarray  # forward, m/s
    accel: np.ndarray  # forward, m/s^2
    yaw_rate: np.ndarray  # rad/s

    @property
    def velocity(self) -> np.ndarray:
        return self.speed[:, None] * np.stack([np.cos(self.yaw), np.sin(self.yaw)], axis=-1)

    @property
    def lateral_accel(self) -> np.ndarray:
        return self.speed * self.yaw_rate


class EgoDrive:
    """Integrates the drive once; then answers ``at(times)`` exactly."""

    def __init__(
        self, network: RoadNetwork, traffic: Traffic, duration_s: float, rng: np.random.Generator
    ) -> None:
        self.network = network
        route = network.route
        self.stops = [j.s - 19.0 for j in network.junctions if rng.random() < 0.5 and j.s > 40.0]
        self.dwell_s = [rng.uniform(1.5, 4.0) for _ in self.stops]
        grid = np.arange(0.0, route.length, 1.0)
        limit = np.minimum(
            CRUISE_SPEED,
            np.sqrt(LATERAL_LIMIT / np.maximum(np.abs(route.curvature_at(grid)), 1e-6)),
        )
        for i in range(len(grid) - 2, -1, -1):  # brake in time for curves
            limit[i] = min(limit[i], np.sqrt(limit[i + 1] ** 2 + 2.0 * COMFORT_DECEL))
        self._plan_s, self._plan_v = grid, limit
        steps = int(np.ceil(duration_s / STEP_S)) + 2
        s = np.zeros(steps + 1)
        v = np.zeros(steps + 1)
        a = np.zeros(steps + 1)
        accel, stop_index, stopped_since = 0.0, 0, None
        for i in range(steps):
            t = i * STEP_S
            if i % CONTROL_EVERY == 0:
                target = self._planned_speed(s[i])
                if stop_index < len(self.stops):
                    to_stop = self.stops[stop_index] - s[i]
                    target = min(target, np.sqrt(2.0 * COMFORT_DECEL * max(to_stop, 0.0)))
                    if to_stop < 1.0 and v[i] < 0.05:
                        stopped_since = t if stopped_since is None else stopped_since
                        if t - stopped_since > self.dwell_s[stop_index]:
                            stop_index, stopped_since = stop_index + 1, None
                target = min(target, self._following_speed(traffic, t, s[i], v[i]))
                if t < START_HOLD_S:
                    target = 0.0
                wanted = np.clip(1.2 * (target - v[i]), -MAX_DECEL, MAX_ACCEL)
                jerk_step = MAX_JERK * STEP_S * CONTROL_EVERY
                accel = float(np.clip(wanted, accel - jerk_step, accel + jerk_step))
            step_accel = max(accel, -v[i] / STEP_S)  # never roll backwards
            a[i] = step_accel
            v[i + 1] = v[i] + step_accel * STEP_S
            s[i + 1] = s[i] + v[i] * STEP_S + 0.5 * step_accel * STEP_S**2
        self._s, self._v, self._a = s, v, a
        if s[-1] > route.length:
            raise ValueError("route too short for the drive")

    def _planned_speed(self, s: float) -> float:
        return float(np.interp(s, self._plan_s, self._plan_v))

    def _following_speed(self, traffic: Traffic, t: float, s: float, v: float) -> float:
        """Car following: keep 5 m plus 1.5 s behind whatever is in the lane ahead."""
        states = traffic.states(t, self.network)
        route = self.network.route
        origin = route.point_at(s)
        psi = float(route.heading_at(s))
        rel = states.xy - origin
        along = rel @ np.array([np.cos(psi), np.sin(psi)])
        across = rel @ np.array([-np.sin(psi), np.cos(psi)])
        on_route = traffic.on_route
        d_now = np.clip(traffic.d0 + traffic.vd * (t - traffic.t0), traffic.d_lo, traffic.d_hi)
        s_obj = traffic.s0 + traffic.vs * t
        along = np.where(on_route, s_obj - s, along)
        across = np.where(on_route, d_now, across)
        half_length = 0.5 * traffic.size[:, 0]
        gap = along - half_length - FRONT_OVERHANG
        in_lane = (
            states.valid
            & (np.abs(across) < 1.2 + 0.5 * traffic.size[:, 1])
            & (gap > -1.0)
            & (gap < 60.0)
        )
        if not in_lane.any():
            return np.inf
        lead = np.argmin(np.where(in_lane, gap, np.inf))
        lead_speed = max(float(states.velocity[lead] @ np.array([np.cos(psi), np.sin(psi)])), 0.0)
        wanted_gap = 5.0 + 1.5 * v
        if gap[lead] < 5.0:
            return 0.0
        return max(lead_speed + 0.5 * (gap[lead] - wanted_gap), 0.0)

    def at(self, t: np.ndarray | float) -> EgoState:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        i = np.clip((t / STEP_S).astype(np.int64), 0, len(self._a) - 2)
        tau = t - i * STEP_S
        a = self._a[i]
        s = self._s[i] + self._v[i] * tau + 0.5 * a * tau**2
        speed = self._v[i] + a * tau
        route = self.network.route
        return EgoState(
            t=t,
            xy=route.point_at(s),
            yaw=route.heading_at(s),
            speed=speed,
            accel=a,
            yaw_rate=speed * route.curvature_at(s),
        )

    @property
    def distance_m(self) -> float:
        return float(self._s[-1])
