"""Automotive radar: sparse detections from a link budget, with doppler and clutter.

A target is detected when its signal-to-noise ratio, ``RCS - 40 log10(r) + constant``
with Swerling-1 fluctuation, clears a threshold; people (low RCS) fade out at shorter
range than cars. Each detection carries the range rate (``doppler``, m/s, positive when
receding) of the reflecting point relative to the moving sensor, the RCS (dBsm), and
noise whose angular part grows with range. Multipath ghosts, ground clutter and rain
clutter are added; fog barely matters at radar wavelengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.sim.ego import EgoState
from dynfusion_ros.sim.raycast import Boxes, first_hits
from dynfusion_ros.sim.rig import SensorRig
from dynfusion_ros.sim.scenario import ActiveContext
from dynfusion_ros.sim.world import RCS_DBSM, ObjectStates

SNR_AT_50M_0DBSM = 12.0  # dB
DETECTION_THRESHOLD_DB = 10.0
POINT_DTYPE = np.dtype(
    [
        ("x", np.float32),
        ("y", np.float32),
        ("z", np.float32),
        ("doppler", np.float32),
        ("rcs", np.float32),
    ]
)
STRUCTURE_RCS_DBSM = 12.0


@dataclass(frozen=True)
class _Pose:
    origin: np.ndarray  # sensor position (world x, y)
    yaw: float
    velocity: np.ndarray  # sensor velocity over ground (world)


@dataclass
class _Returns:
    """Candidate returns (world frame): where, how the reflector moves, how strong."""

    xyz: np.ndarray  # (N, 3)
    velocity: np.ndarray  # (N, 2)
    rcs: np.ndarray  # (N,) dBsm
    source: np.ndarray  # (N,) object index, -1 structure, -2 clutter or ghost

    def subset(self, keep: np.ndarray) -> _Returns:
        return _Returns(self.xyz[keep], self.velocity[keep], self.rcs[keep], self.source[keep])

    @staticmethod
    def concatenate(parts: list[_Returns]) -> _Returns:
        if not parts:
            return _Returns(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), np.zeros(0, int))
        return _Returns(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("xyz", "velocity", "rcs", "source")
            )
        )


@dataclass(frozen=True)
class RadarScan:
    points: np.ndarray  # POINT_DTYPE, sensor frame
    source: np.ndarray  # object index, -1 structure, -2 clutter/ghost


class RadarModel:
    def __init__(self, rig: SensorRig) -> None:
        self.rig = rig
        self.mount = rig.T_base_radar[:3, 3]
        self.half_fov = np.radians(rig.radar_fov_deg) / 2

    def scan(
        self,
        ego: EgoState,
        objects: ObjectStates,
        boxes: Boxes,
        context: ActiveContext,
        rng: np.random.Generator,
    ) -> RadarScan:
        """One scan at the instant of ``ego`` (a single state); ``boxes`` for occlusion."""
        yaw = float(ego.yaw[0])
        rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        lever = rot @ self.mount[:2]
        # the sensor moves with the ego plus the yaw rate crossed with its lever arm
        spin = float(ego.yaw_rate[0]) * np.array([-lever[1], lever[0]])
        pose = _Pose(ego.xy[0] + lever, yaw, ego.velocity[0] + spin)
        real = self._detect(self._scatterers(objects, boxes, pose, rng), pose, context, rng)
        returns = _Returns.concatenate(
            [real, self._ghosts(real, pose, rng), self._clutter(context, pose, rng)]
        )
        points, kept = self._measure(returns, pose, rng)
        return RadarScan(points, returns.source[kept])

    def _in_view(self, xy: np.ndarray, pose: _Pose) -> np.ndarray:
        rel = xy - pose.origin
        r = np.hypot(rel[:, 0], rel[:, 1])
        bearing = (np.arctan2(rel[:, 1], rel[:, 0]) - pose.yaw + np.pi) % (2 * np.pi) - np.pi
        return (r > 1.0) & (r < self.rig.radar_max_range_m) & (np.abs(bearing) < self.half_fov)

    def _scatterers(self, objects: ObjectStates, boxes: Boxes, pose: _Pose, rng) -> _Returns:
        """Scattering points on the faces towards the sensor: a few per car (more when
        near), usually one per person or bike, some per pole or facade; occluded ones
        are dropped."""
        parts = []
        for i in np.flatnonzero(objects.valid & self._in_view(objects.xy, pose)):
            cls = int(objects.object_class[i])
            r = float(np.linalg.norm(objects.xy[i] - pose.origin))
            count = 1 + (rng.poisson(2.0 * min(20.0 / r, 1.0)) if cls == 0 else rng.poisson(0.2))
            velocity = np.tile(objects.velocity[i], (count, 1))
            if cls != 0:  # limbs and wheels: micro-doppler spread
                velocity = velocity + rng.normal(0.0, 0.5, velocity.shape)
            xyz = _surface_points(
                objects.xy[i], objects.yaw[i], objects.size[i], pose.origin, count=count, rng=rng
            )
            rcs = np.full(count, RCS_DBSM[cls] - 10 * np.log10(count))
            parts.append(_Returns(xyz, velocity, rcs, np.full(count, i)))
        structure = boxes.subset(np.flatnonzero(boxes.owner == -1))
        for b in np.flatnonzero(self._in_view(structure.centre, pose)):
            count = 1 + rng.poisson(0.5)
            size = (
                2 * structure.half_length[b],
                2 * structure.half_width[b],
                min(structure.z1[b], 3.0),
            )
            xyz = _surface_points(
                structure.centre[b], structure.yaw[b], size, pose.origin, count=count, rng=rng
            )
            parts.append(
                _Returns(
                    xyz,
                    np.zeros((count, 2)),
                    np.full(count, STRUCTURE_RCS_DBSM),
                    np.full(count, -1),
                )
            )
        returns = _Returns.concatenate(parts)
        return returns.subset(_visible(returns, boxes, pose.origin))

    @staticmethod
    def _detect(returns: _Returns, pose: _Pose, context: ActiveContext, rng) -> _Returns:
        """The radar equation with Swerling-1 fluctuation; rain (and, barely, fog) attenuate."""
        c = context.conditions
        r = np.maximum(np.linalg.norm(returns.xyz[:, :2] - pose.origin, axis=1), 0.5)
        loss_db = 2 * r * (0.01 * c.rain_rate_mm_h / 25.0 + 0.0005 * c.fog_extinction_per_m / 0.05)
        fluctuation = 10 * np.log10(rng.exponential(1.0, len(r)) + 1e-9)
        snr = SNR_AT_50M_0DBSM + returns.rcs + fluctuation - 40 * np.log10(r / 50.0) - loss_db
        detected = returns.subset(snr > DETECTION_THRESHOLD_DB)
        detected.rcs = detected.rcs + fluctuation[snr > DETECTION_THRESHOLD_DB]
        return detected

    @staticmethod
    def _ghosts(real: _Returns, pose: _Pose, rng) -> _Returns:
        """Multipath: a weaker copy further along the same bearing, with the same doppler."""
        ghost = real.subset(rng.random(len(real.rcs)) < 0.06)
        stretch = rng.uniform(1.3, 2.0, len(ghost.rcs))[:, None]
        ghost.xyz[:, :2] = pose.origin + (ghost.xyz[:, :2] - pose.origin) * stretch
        ghost.rcs = ghost.rcs - 8.0
        ghost.source = np.full(len(ghost.rcs), -2)
        return ghost

    def _clutter(self, context: ActiveContext, pose: _Pose, rng) -> _Returns:
        """Ground clutter (static), rain and snow clutter (near, slow), and a clutter storm
        (anywhere, any doppler) when that fault is on."""
        c = context.conditions
        n_ground = rng.poisson(6.0)
        n_rain = rng.poisson(8.0 * c.rain_rate_mm_h / 25.0 + 4.0 * c.snow_rate_mm_h / 4.0)
        storm = context.fault("radar_clutter_storm")
        n_storm = int(storm.params.get("points", 200)) if storm else 0
        n = n_ground + n_rain + n_storm
        r = np.concatenate(
            [
                rng.uniform(3.0, 40.0, n_ground),
                rng.uniform(1.0, 25.0, n_rain),
                rng.uniform(1.0, self.rig.radar_max_range_m, n_storm),
            ]
        )
        bearing = pose.yaw + rng.uniform(-self.half_fov, self.half_fov, n)
        unit = np.stack([np.cos(bearing), np.sin(bearing)], axis=-1)
        z = np.concatenate(
            [np.zeros(n_ground), rng.uniform(0.0, 3.0, n_rain), rng.uniform(-0.5, 3.0, n_storm)]
        )
        velocity = np.concatenate(
            [
                np.zeros((n_ground, 2)),
                rng.normal(0.0, 1.0, (n_rain, 2)),
                pose.velocity + unit[n - n_storm :] * rng.uniform(-20.0, 20.0, (n_storm, 1)),
            ]
        )
        rcs = np.concatenate(
            [
                rng.uniform(-25, -12, n_ground),
                rng.uniform(-30, -15, n_rain),
                rng.uniform(-15, 10, n_storm),
            ]
        )
        return _Returns(np.c_[pose.origin + unit * r[:, None], z], velocity, rcs, np.full(n, -2))

    def _measure(self, returns: _Returns, pose: _Pose, rng) -> tuple[np.ndarray, np.ndarray]:
        """Into the sensor frame with range, angle (growing with range) and doppler noise;
        returns the points and which returns survived the field of view."""
        rel = returns.xyz[:, :2] - pose.origin
        height = returns.xyz[:, 2] - self.mount[2]
        # range rate along the 3-D line of sight (sensor and reflectors move level)
        slant = np.maximum(np.sqrt((rel * rel).sum(axis=1) + height * height), 1e-6)
        doppler = ((returns.velocity - pose.velocity) * rel).sum(axis=1) / slant
        cos_y, sin_y = np.cos(pose.yaw), np.sin(pose.yaw)
        x = cos_y * rel[:, 0] + sin_y * rel[:, 1]
        y = -sin_y * rel[:, 0] + cos_y * rel[:, 1]
        r = np.hypot(x, y)
        az = np.arctan2(y, x)
        n = len(r)
        r = r + rng.normal(0.0, 1.0, n) * (0.1 + 0.002 * r)
        az = az + rng.normal(0.0, 1.0, n) * np.radians(0.3 + 1.2 * r / 100.0)
        z = height + rng.normal(0.0, 1.0, n) * np.maximum(r, 1.0) * np.radians(2.0)
        keep = (r > 0.5) & (np.abs(az) <= self.half_fov) & (r <= self.rig.radar_max_range_m)
        points = np.empty(int(keep.sum()), POINT_DTYPE)
        points["x"] = (r * np.cos(az))[keep]
        points["y"] = (r * np.sin(az))[keep]
        points["z"] = z[keep]
        points["doppler"] = (doppler + rng.normal(0.0, 0.1, n))[keep]
        points["rcs"] = returns.rcs[keep]
        return points, keep


def _surface_points(centre, yaw, size, origin, *, count, rng) -> np.ndarray:
    """``count`` points on the faces of a box (length, width, height) facing ``origin``."""
    length, width, height = size
    c, s = np.cos(yaw), np.sin(yaw)
    to_sensor = origin - centre
    local = (c * to_sensor[0] + s * to_sensor[1], -s * to_sensor[0] + c * to_sensor[1])
    u = rng.uniform(-0.5, 0.5, count) * length
    w = rng.uniform(-0.5, 0.5, count) * width
    if abs(local[0]) / length > abs(local[1]) / width:
        u = np.full(count, np.sign(local[0]) * length / 2)
    else:
        w = np.full(count, np.sign(local[1]) * width / 2)
    z = rng.uniform(0.2, 0.7, count) * height
    return np.c_[centre[0] + c * u - s * w, centre[1] + s * u + c * w, z]


def _visible(returns: _Returns, boxes: Boxes, origin: np.ndarray) -> np.ndarray:
    """Line of sight from the sensor to each scattering point (its own boxes excepted)."""
    n = len(returns.rcs)
    if n == 0:
        return np.zeros(0, bool)
    origins = np.tile(np.r_[origin, 0.6], (n, 1))
    ray = returns.xyz - origins
    distance = np.linalg.norm(ray, axis=1)
    hit_t, hit_box = first_hits(origins, ray / np.maximum(distance, 1e-6)[:, None], boxes)
    blocker = np.where(hit_box >= 0, boxes.owner[np.maximum(hit_box, 0)], -9)
    own = (blocker == returns.source) & (returns.source >= 0)
    return ~((hit_t < distance - 0.3) & ~own)
