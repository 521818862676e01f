"""Spinning lidar: ray casting, a link budget, and weather that scatters the beam.

Each ray's return power is ``reflectivity * cos(incidence) * exp(-2 * extinction * r) / r^2``
and the ray returns a point only above the receiver's threshold, so fog shortens the
range physically rather than by decree. Fog, rain and snow also put false points near the
sensor: light scattered back by droplets and flakes arrives before (and, when stronger,
instead of) the target's echo. Points are reported as real drivers report them: in the
sensor frame at the instant each column fired (not motion-compensated), with the firing
time as an offset from the header stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.sim.ego import EgoDrive
from dynfusion_ros.sim.raycast import Boxes, Scene, rotate_to_box, slab_hit, to_box_frame
from dynfusion_ros.sim.rig import SensorRig
from dynfusion_ros.sim.road import GroundTexture
from dynfusion_ros.sim.scenario import ActiveContext

# Receiver threshold: a 10 % reflector facing the sensor is seen out to 100 m in clear air.
THRESHOLD_POWER = 0.10 / 100.0**2
RANGE_NOISE_M = 0.015
POINT_DTYPE = np.dtype(
    [
        ("x", np.float32),
        ("y", np.float32),
        ("z", np.float32),
        ("intensity", np.float32),
        ("ring", np.uint16),
        ("time", np.float32),
    ]
)


@dataclass
class _Echoes:
    """Per ray (beams, columns): first-hit range (inf: none), what was hit, and how."""

    range: np.ndarray
    owner: np.ndarray
    reflectivity: np.ndarray
    cos_incidence: np.ndarray


@dataclass(frozen=True)
class LidarSweep:
    stamp_s: float  # header stamp: when the sweep started
    points: np.ndarray  # POINT_DTYPE, in firing order
    hit_owner: np.ndarray  # (N,) object index each point came from, -1 otherwise


class LidarModel:
    def __init__(self, rig: SensorRig) -> None:
        self.rig = rig
        self.period = 1.0 / rig.lidar_rate_hz
        elevation = rig.lidar_elevations
        columns = rig.lidar_columns
        # the head spins clockwise from straight behind, so it faces forward mid-sweep
        self.azimuth = np.pi - 2.0 * np.pi * (np.arange(columns) + 0.5) / columns
        self.column_offset = (np.arange(columns) + 0.5) / columns * self.period
        ce = np.cos(elevation)[:, None]
        self.directions = np.stack(
            [
                ce * np.cos(self.azimuth)[None],
                ce * np.sin(self.azimuth)[None],
                np.broadcast_to(np.sin(elevation)[:, None], (len(elevation), columns)),
            ],
            axis=-1,
        )  # (beams, columns, 3) in the sensor frame
        self.mount = rig.T_base_lidar[:3, 3]
        with np.errstate(divide="ignore"):
            self.ground_range = np.where(elevation < 0, self.mount[2] / np.sin(-elevation), np.inf)
        self.ground_cos = np.clip(np.sin(-elevation), 0.0, 1.0)
        self.ring = np.broadcast_to(np.arange(len(elevation))[:, None], (len(elevation), columns))

    def _column_span(self, boxes: Boxes, origin: np.ndarray, heading: float) -> list[np.ndarray]:
        """Columns whose rays can reach each box (by the azimuths of its corners)."""
        columns = self.rig.lidar_columns
        corners = boxes.corners()[:, :4, :2] - origin
        centre_az = np.arctan2(boxes.centre[:, 1] - origin[1], boxes.centre[:, 0] - origin[0])
        corner_az = np.arctan2(corners[..., 1], corners[..., 0])
        rel = (corner_az - centre_az[:, None] + np.pi) % (2 * np.pi) - np.pi
        inside = (
            np.linalg.norm(boxes.centre - origin, axis=1)
            < np.hypot(boxes.half_length, boxes.half_width) + 0.5
        )
        spans = []
        for i in range(len(boxes)):
            if inside[i]:
                spans.append(np.arange(columns))
                continue
            lo = centre_az[i] + rel[i].min() - heading
            hi = centre_az[i] + rel[i].max() - heading
            # column index grows as azimuth falls: c = (pi - az) / (2 pi) * C - 0.5
            c_lo = int(np.floor((np.pi - hi) / (2 * np.pi) * columns - 0.5)) - 1
            c_hi = int(np.ceil((np.pi - lo) / (2 * np.pi) * columns - 0.5)) + 1
            spans.append(np.arange(c_lo, c_hi + 1) % columns)
        return spans

    def sweep(
        self,
        stamp_s: float,
        ego: EgoDrive,
        scene: Scene,
        ground: GroundTexture,
        *,
        context: ActiveContext,
        rng: np.random.Generator,
    ) -> LidarSweep:
        """One sweep starting at ``stamp_s``, through ``scene`` (its boxes move at their
        velocities during the sweep)."""
        times = stamp_s + self.column_offset
        state = ego.at(times)
        cos_y, sin_y = np.cos(state.yaw), np.sin(state.yaw)
        mx, my = self.mount[0], self.mount[1]
        origin_xy = state.xy + np.stack([cos_y * mx - sin_y * my, sin_y * mx + cos_y * my], -1)
        d = self.directions
        world_dir = np.stack(
            [
                cos_y * d[..., 0] - sin_y * d[..., 1],
                sin_y * d[..., 0] + cos_y * d[..., 1],
                d[..., 2],
            ],
            axis=-1,
        )
        echoes = self._cast(times, origin_xy, world_dir, float(state.yaw[len(times) // 2]), scene)
        on_ground = (echoes.owner == -2) & np.isfinite(echoes.range)
        hit_xy = (
            origin_xy[None]
            + world_dir[..., :2] * np.nan_to_num(echoes.range, posinf=0.0)[..., None]
        )
        echoes.reflectivity[on_ground] = ground.sample_reflectivity(hit_xy[on_ground])
        r, intensity, owner = self._receive(echoes, on_ground, context, rng)
        valid = np.isfinite(r)
        fault = context.fault("lidar_partial")
        if fault is not None:
            half = np.radians(float(fault.params.get("sector_deg", 90.0))) / 2
            valid &= (np.abs(self.azimuth) > half)[None]
        if context.fault("lidar_dropout") is not None:
            valid[:] = False
        return LidarSweep(stamp_s, self._pack(r, intensity, valid), owner.T[valid.T])

    def _cast(self, times, origin_xy, world_dir, heading: float, scene: Scene) -> _Echoes:
        """First hit of every ray: the ground, or the nearest box (moving with its object)."""
        beams, columns = self.directions.shape[:2]
        echoes = _Echoes(
            range=np.broadcast_to(self.ground_range[:, None], (beams, columns)).copy(),
            owner=np.full((beams, columns), -2),  # -2 ground, -1 structure, >= 0 object
            reflectivity=np.zeros((beams, columns)),
            cos_incidence=np.broadcast_to(self.ground_cos[:, None], (beams, columns)).copy(),
        )
        boxes = scene.boxes
        mid = origin_xy[columns // 2]
        index = np.flatnonzero(
            np.linalg.norm(boxes.centre - mid, axis=1) < self.rig.lidar_max_range_m + 30
        )
        spans = self._column_span(boxes.subset(index), mid, heading)
        origin3 = np.c_[origin_xy, np.full(columns, self.mount[2])]
        for b, cols in zip(index, spans, strict=True):
            shift = scene.box_velocity[b] * (times[cols] - scene.t_s)[:, None]
            o = to_box_frame(origin3[cols], boxes.centre[b] + shift, boxes.yaw[b])
            v = rotate_to_box(world_dir[:, cols], boxes.yaw[b])
            t, axis = slab_hit(o[None], v, boxes.extent(b))
            closer = t < echoes.range[:, cols]
            if not closer.any():
                continue
            cos_hit = np.abs(np.take_along_axis(v, axis[..., None], -1)[..., 0])
            for array, value in (
                (echoes.range, t),
                (echoes.owner, boxes.owner[b]),
                (echoes.reflectivity, boxes.reflectivity[b]),
                (echoes.cos_incidence, cos_hit),
            ):
                sub = array[:, cols]
                sub[closer] = value[closer] if np.ndim(value) else value
                array[:, cols] = sub
        return echoes

    def _receive(self, echoes: _Echoes, on_ground, context: ActiveContext, rng):
        """The link budget and the weather: which echoes the receiver reports, and where.

        Returns (range with NaN for no return, intensity, owner) per ray."""
        c = context.conditions
        wet = min(c.rain_rate_mm_h / 25.0, 1.0)
        snow_cover = min(c.snow_rate_mm_h / 6.0, 0.7)
        ground = echoes.reflectivity[on_ground]
        echoes.reflectivity[on_ground] = (1 - snow_cover) * ground * (
            1 - 0.5 * wet
        ) + snow_cover * 0.8
        extinction = c.fog_extinction_per_m + 0.0003 * c.rain_rate_mm_h**0.6
        r = np.where(np.isfinite(echoes.range), echoes.range, 1e9)
        echo = echoes.reflectivity * echoes.cos_incidence * np.exp(-2.0 * extinction * r)
        power = echo / r**2
        valid = (power >= THRESHOLD_POWER) & (r <= self.rig.lidar_max_range_m)
        valid &= rng.random(r.shape) > 0.002 + 0.05 * wet
        r = r + rng.normal(0.0, RANGE_NOISE_M * (1 + wet), r.shape)
        intensity = np.clip(255.0 * echo * (1.0 + rng.normal(0.0, 0.05, r.shape)), 0.0, 255.0)
        strength = np.where(valid, power / THRESHOLD_POWER, 0.0)
        return self._scatter(r, intensity, strength, echoes.owner, context=context, rng=rng)

    def _pack(self, r, intensity, valid) -> np.ndarray:
        """Points in firing order (column by column, beams bottom-up), sensor frame."""
        order = valid.T
        points = np.empty(int(order.sum()), POINT_DTYPE)
        r_t = r.T[order]
        directions = self.directions.transpose(1, 0, 2)[order]
        for k, name in enumerate("xyz"):
            points[name] = r_t * directions[:, k]
        points["intensity"] = intensity.T[order]
        points["ring"] = self.ring.T[order]
        columns, beams = order.shape
        points["time"] = np.broadcast_to(self.column_offset[:, None], (columns, beams))[order]
        return points

    @staticmethod
    def _scatter(r, intensity, strength, owner, *, context: ActiveContext, rng):
        """Backscatter from fog, rain drops and snow flakes: near, weak, false returns.

        The receiver keeps the strongest echo, so a scatterer wins over no echo or a weak
        one (``strength``: echo power over threshold) behind it, never over a strong one.
        Returns ranges with NaN where no point is reported."""
        c = context.conditions
        shape = r.shape
        valid = strength > 0
        r = np.where(valid, r, np.nan)
        owner = np.where(valid, owner, -3)
        weak = strength < 20.0
        sources = (
            # (probability per ray, range sampler, intensity range)
            (
                1 - np.exp(-6.0 * c.fog_extinction_per_m),
                lambda n: 1.0 + rng.gamma(2.0, 1.2, n),
                (1, 8),
            ),
            (0.012 * c.rain_rate_mm_h / 25.0, lambda n: rng.uniform(0.5, 6.0, n), (2, 15)),
            (0.04 * c.snow_rate_mm_h / 4.0, lambda n: 0.5 + rng.exponential(6.0, n), (20, 90)),
        )
        for probability, ranges, (lo, hi) in sources:
            if probability <= 0:
                continue
            hit = rng.random(shape) < probability
            n = int(hit.sum())
            near = ranges(n)
            replace = ~(r[hit] < near) & weak[hit]  # no echo, or a weak one behind it
            chosen = np.flatnonzero(hit.ravel())[replace]
            r.ravel()[chosen] = near[replace]
            intensity.ravel()[chosen] = rng.uniform(lo, hi, len(chosen))
            owner.ravel()[chosen] = -3
        return r, intensity, owner
