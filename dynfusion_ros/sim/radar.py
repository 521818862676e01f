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
    [("x", np.float32), ("y", np.float32), ("z", np.float32), ("doppler", np.float32), ("rcs", np.float32)]
)
STRUCTURE_RCS_DBSM = 12.0


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
        c = context.conditions
        yaw = float(ego.yaw[0])
        cos_y, sin_y = np.cos(yaw), np.sin(yaw)
        rot = np.array([[cos_y, -sin_y], [sin_y, cos_y]])
        origin = ego.xy[0] + rot @ self.mount[:2]
        # sensor velocity: ego velocity plus yaw rate crossed with the lever arm
        lever = rot @ self.mount[:2]
        sensor_velocity = ego.velocity[0] + float(ego.yaw_rate[0]) * np.array([-lever[1], lever[0]])
        targets_xyz, target_velocity, rcs, source = [], [], [], []
        # moving and parked objects: a few scattering points on the faces towards us
        for i in np.flatnonzero(objects.valid):
            rel = objects.xy[i] - origin
            r = float(np.hypot(*rel))
            bearing = np.arctan2(rel[1], rel[0]) - yaw
            bearing = (bearing + np.pi) % (2 * np.pi) - np.pi
            if r > self.rig.radar_max_range_m or r < 1.0 or abs(bearing) > self.half_fov:
                continue
            cls = int(objects.object_class[i])
            length, width, height = objects.size[i]
            count = 1 + (rng.poisson(2.0 * min(20.0 / r, 1.0)) if cls == 0 else rng.poisson(0.2))
            points = self._surface_points(objects.xy[i], objects.yaw[i], length, width, height, origin, count, rng)
            targets_xyz.append(points)
            velocity = np.tile(objects.velocity[i], (count, 1))
            if cls != 0:  # limbs and wheels: micro-doppler spread
                velocity = velocity + rng.normal(0.0, 0.5, velocity.shape)
            target_velocity.append(velocity)
            rcs.append(np.full(count, RCS_DBSM[cls]) - 10 * np.log10(count))
            source.append(np.full(count, i))
        # structure: poles and facades
        structure = boxes.subset(np.flatnonzero(boxes.owner == -1))
        rel = structure.centre - origin
        r = np.hypot(rel[:, 0], rel[:, 1])
        bearing = (np.arctan2(rel[:, 1], rel[:, 0]) - yaw + np.pi) % (2 * np.pi) - np.pi
        for b in np.flatnonzero((r < self.rig.radar_max_range_m) & (np.abs(bearing) < self.half_fov)):
            count = 1 + rng.poisson(0.5)
            hl, hw = structure.half_length[b], structure.half_width[b]
            points = self._surface_points(structure.centre[b], structure.yaw[b], 2 * hl, 2 * hw, min(structure.z1[b], 3.0), origin, count, rng)
            targets_xyz.append(points)
            target_velocity.append(np.zeros((count, 2)))
            rcs.append(np.full(count, STRUCTURE_RCS_DBSM))
            source.append(np.full(count, -1))
        if targets_xyz:
            xyz = np.concatenate(targets_xyz)
            velocity = np.concatenate(target_velocity)
            rcs_db = np.concatenate(rcs)
            src = np.concatenate(source)
            keep = self._visible(xyz, src, boxes, origin)
            xyz, velocity, rcs_db, src = xyz[keep], velocity[keep], rcs_db[keep], src[keep]
        else:
            xyz, velocity, rcs_db, src = np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), np.zeros(0, int)
        rel = xyz[:, :2] - origin
        r = np.maximum(np.hypot(rel[:, 0], rel[:, 1]), 0.5)
        rain_loss_db = 2 * 0.01 * (c.rain_rate_mm_h / 25.0) * r + 2 * 0.0005 * c.fog_extinction_per_m / 0.05 * r
        fluctuation = 10 * np.log10(rng.exponential(1.0, len(r)) + 1e-9)
        snr = SNR_AT_50M_0DBSM + rcs_db + fluctuation - 40 * np.log10(r / 50.0) - rain_loss_db
        detected = snr > DETECTION_THRESHOLD_DB
        xyz, velocity, rcs_db, src, r, rel = xyz[detected], velocity[detected], rcs_db[detected], src[detected], r[detected], rel[detected]
        unit = rel / r[:, None]
        range_rate = ((velocity - sensor_velocity) * unit).sum(axis=1)
        # multipath ghosts: the same doppler, further away along a similar bearing
        ghosts = rng.random(len(r)) < 0.06
        ghost_r = r[ghosts] * rng.uniform(1.3, 2.0, ghosts.sum())
        ghost_xy = origin + unit[ghosts] * ghost_r[:, None]
        ghost_xyz = np.c_[ghost_xy, xyz[ghosts, 2]]
        world = np.concatenate([xyz, ghost_xyz])
        doppler = np.concatenate([range_rate, range_rate[ghosts]])
        rcs_out = np.concatenate([rcs_db + fluctuation[detected], rcs_db[ghosts] - 8.0])
        src = np.concatenate([src, np.full(ghosts.sum(), -2)])
        clutter = self._clutter(context, origin, yaw, sensor_velocity, rng)
        world = np.concatenate([world, clutter[0]])
        doppler = np.concatenate([doppler, clutter[1]])
        rcs_out = np.concatenate([rcs_out, clutter[2]])
        src = np.concatenate([src, np.full(len(clutter[1]), -2)])
        points, kept = self._measure(world, doppler, rcs_out, origin, yaw, rng)
        return RadarScan(points, src[kept])

    @staticmethod
    def _surface_points(centre, yaw, length, width, height, origin, count, rng) -> np.ndarray:
        """Points on the faces of a box that face the sensor."""
        c, s = np.cos(yaw), np.sin(yaw)
        to_sensor = origin - centre
        local = np.array([c * to_sensor[0] + s * to_sensor[1], -s * to_sensor[0] + c * to_sensor[1]])
        u = rng.uniform(-0.5, 0.5, count) * length
        w = rng.uniform(-0.5, 0.5, count) * width
        x_face = abs(local[0]) / length > abs(local[1]) / width
        if x_face:
            u = np.full(count, np.sign(local[0]) * length / 2)
        else:
            w = np.full(count, np.sign(local[1]) * width / 2)
        z = rng.uniform(0.2, 0.7, count) * height
        return np.c_[centre[0] + c * u - s * w, centre[1] + s * u + c * w, z]

    @staticmethod
    def _visible(xyz, src, boxes: Boxes, origin) -> np.ndarray:
        """Line of sight from the sensor to each scattering point (own boxes excepted)."""
        origins = np.tile(np.r_[origin, 0.6], (len(xyz), 1))
        ray = xyz - origins
        distance = np.linalg.norm(ray, axis=1)
        direction = ray / np.maximum(distance, 1e-6)[:, None]
        blocked = np.zeros(len(xyz), bool)
        hit_t, hit_box = first_hits(origins, direction, boxes)
        blocker = np.where(hit_box >= 0, boxes.owner[np.maximum(hit_box, 0)], -9)
        same = (blocker == src) & (src >= 0)
        blocked = (hit_t < distance - 0.3) & ~same
        return ~blocked

    def _clutter(self, context: ActiveContext, origin, yaw, sensor_velocity, rng):
        c = context.conditions
        n_ground = rng.poisson(6.0)
        n_rain = rng.poisson(8.0 * c.rain_rate_mm_h / 25.0 + 4.0 * c.snow_rate_mm_h / 4.0)
        storm = context.fault("radar_clutter_storm")
        n_storm = int(storm.params.get("points", 200)) if storm else 0
        n = n_ground + n_rain + n_storm
        r = np.concatenate(
            [rng.uniform(3.0, 40.0, n_ground), rng.uniform(1.0, 25.0, n_rain), rng.uniform(1.0, self.rig.radar_max_range_m, n_storm)]
        )
        bearing = yaw + rng.uniform(-self.half_fov, self.half_fov, n)
        unit = np.stack([np.cos(bearing), np.sin(bearing)], axis=-1)
        xy = origin + unit * r[:, None]
        z = np.concatenate([np.zeros(n_ground), rng.uniform(0.0, 3.0, n_rain), rng.uniform(-0.5, 3.0, n_storm)])
        static_rate = -(unit @ sensor_velocity)
        doppler = np.concatenate(
            [
                static_rate[:n_ground] + rng.normal(0, 0.1, n_ground),
                static_rate[n_ground : n_ground + n_rain] + rng.normal(0, 1.0, n_rain),
                rng.uniform(-20.0, 20.0, n_storm),
            ]
        )
        rcs = np.concatenate([rng.uniform(-25, -12, n_ground), rng.uniform(-30, -15, n_rain), rng.uniform(-15, 10, n_storm)])
        return np.c_[xy, z], doppler, rcs

    def _measure(self, world, doppler, rcs, origin, yaw, rng) -> tuple[np.ndarray, np.ndarray]:
        """Into the sensor frame, with range, angle (growing with range) and doppler noise."""
        rel = world[:, :2] - origin
        cos_y, sin_y = np.cos(yaw), np.sin(yaw)
        x = cos_y * rel[:, 0] + sin_y * rel[:, 1]
        y = -sin_y * rel[:, 0] + cos_y * rel[:, 1]
        r = np.hypot(x, y)
        az = np.arctan2(y, x)
        r = r + rng.normal(0.0, 1.0, len(r)) * (0.1 + 0.002 * r)
        az = az + rng.normal(0.0, 1.0, len(r)) * np.radians(0.3 + 1.2 * r / 100.0)
        z = world[:, 2] - self.mount[2] + rng.normal(0.0, 1.0, len(r)) * np.maximum(r, 1.0) * np.radians(2.0)
        keep = (r > 0.5) & (np.abs(az) <= self.half_fov) & (r <= self.rig.radar_max_range_m)
        points = np.empty(int(keep.sum()), POINT_DTYPE)
        points["x"] = (r * np.cos(az))[keep]
        points["y"] = (r * np.sin(az))[keep]
        points["z"] = z[keep]
        points["doppler"] = (doppler + rng.normal(0.0, 0.1, len(r)))[keep]
        points["rcs"] = rcs[keep]
        return points, keep
