"""Pinhole camera: a radiometric renderer with auto-exposure, sensor noise and weather.

The renderer works in linear radiance (1.0 = a white surface in full daylight): ground
from the texture tile by a homography (the ground is a plane), boxes face by face in
painter's order, sky as a gradient. Physics then acts in order: fog as Koschmieder's
law (``L = L0 t + A (1 - t)``, ``t = exp(-extinction * distance)``), sun glare and lens
flare, rain and snow, motion blur over the exposure time, and a sensor that counts
photo-electrons (shot noise) under read noise. Auto-exposure raises exposure time and
then gain as light falls, so night images are darker, blurrier and noisier, as real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dynfusion_ros.sim.ego import EgoDrive
from dynfusion_ros.sim.raycast import Boxes
from dynfusion_ros.sim.rig import SensorRig
from dynfusion_ros.sim.road import GRASS, GroundTexture
from dynfusion_ros.sim.scenario import ActiveContext, Conditions

REFERENCE_EXPOSURE_S = 0.004  # daylight exposure at gain 1
EXPOSURE_LIMITS_S = (0.0005, 0.033)
MAX_GAIN = 16.0
FULL_WELL_E = 10000.0  # electrons at full scale, gain 1
READ_NOISE_E = 8.0
TARGET_LEVEL = 0.18  # auto-exposure aims the mean (linear) at mid-grey
NEAR_PLANE_M = 0.2
HEADLIGHT_INTENSITY = 1.5  # radiance x m^2 on the axis of a low beam (daylight ~ 1)
LAMP_RADIANCE = 6.0  # other vehicles' head and tail lamps, seen directly
SKY_TOP, SKY_HORIZON = np.array([0.35, 0.52, 0.85]), np.array([0.70, 0.78, 0.90])
FACES = (  # corner indices (see Boxes.corners), and the face normal in the box frame
    ((0, 3, 7, 4), (1.0, 0.0, 0.0)),
    ((2, 1, 5, 6), (-1.0, 0.0, 0.0)),
    ((1, 0, 4, 5), (0.0, 1.0, 0.0)),
    ((3, 2, 6, 7), (0.0, -1.0, 0.0)),
    ((4, 7, 6, 5), (0.0, 0.0, 1.0)),
)


@dataclass(frozen=True)
class _View:
    """The camera's pose (world) and the ego's motion at the exposure."""

    position: np.ndarray
    R_cw: np.ndarray  # world -> camera optical frame
    yaw: float
    speed: float
    yaw_rate: float


@dataclass(frozen=True)
class _Light:
    """Irradiance (daylight = 1) from the sky dome, the sun, and our own low beams."""

    sky: float
    sun: float
    sun_direction: np.ndarray
    headlights: float


@dataclass(frozen=True)
class CameraFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    owner: np.ndarray  # (H, W) int32: object index per pixel, -1 structure, -2 ground/sky
    depth: np.ndarray  # (H, W) float32 distance (m), inf for sky
    exposure_s: float
    gain: float


def sun_direction(conditions: Conditions) -> np.ndarray:
    el, az = np.radians(conditions.sun_elevation_deg), np.radians(conditions.sun_azimuth_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def headlight_irradiance(distance, bearing):
    """Low beams: a cone about 50 degrees wide, aimed low (the near road gets little),
    cut off beyond about 45 m."""
    cone = np.exp(-((bearing / 0.45) ** 2))
    return HEADLIGHT_INTENSITY * cone / (distance**2 + 12.0**2) / (1.0 + (distance / 45.0) ** 4)


def _clip_near(points: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against the plane z = NEAR_PLANE_M (camera frame)."""
    out = []
    for i in range(len(points)):
        a, b = points[i - 1], points[i]
        a_in, b_in = a[2] >= NEAR_PLANE_M, b[2] >= NEAR_PLANE_M
        if a_in != b_in:
            u = (NEAR_PLANE_M - a[2]) / (b[2] - a[2])
            out.append(a + u * (b - a))
        if b_in:
            out.append(b)
    return np.array(out)


class CameraModelSim:
    """Renders camera frames for one drive; keeps auto-exposure state between frames."""

    def __init__(self, rig: SensorRig) -> None:
        self.rig = rig
        self.model = rig.camera
        self.K = self.model.K
        w, h = rig.image_width, rig.image_height
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        rays_optical = np.stack(
            [(u - self.K[0, 2]) / self.K[0, 0], (v - self.K[1, 2]) / self.K[1, 1], np.ones_like(u)],
            axis=-1,
        )
        R_bc = rig.T_base_camera[:3, :3]
        self.mount = rig.T_base_camera[:3, 3]
        rays_base = rays_optical @ R_bc.T
        down = -rays_base[..., 2]
        with np.errstate(divide="ignore"):
            t = np.where(down > 1e-4, self.mount[2] / down, np.inf)
        self.ground_depth = (t * np.linalg.norm(rays_base, axis=-1)).astype(np.float32)
        self.ground_depth[self.ground_depth > 2000] = np.inf
        self.ground_mask = np.isfinite(self.ground_depth)
        ground_xy = self.mount[:2] + rays_base[..., :2] * np.where(np.isfinite(t), t, 0)[..., None]
        # low-beam headlights: a forward cone, fading with distance and cut off beyond ~45 m
        bearing = np.arctan2(ground_xy[..., 1], ground_xy[..., 0] - 3.7)
        ground_distance = np.hypot(ground_xy[..., 0] - 3.7, ground_xy[..., 1])
        self.headlight_ground = np.where(
            self.ground_mask & (ground_xy[..., 0] > 3.7),
            headlight_irradiance(ground_distance, bearing),
            0.0,
        ).astype(np.float32)[..., None]
        horizon_mix = np.clip(v / self.K[1, 2], 0.0, 1.0)[..., None]
        self.sky = (SKY_TOP + (SKY_HORIZON - SKY_TOP) * horizon_mix).astype(np.float32)
        self.row_weight = (
            np.clip((v[:, :1] - self.K[1, 2]) / (h - self.K[1, 2]), 0, 1) ** 2
        ).astype(np.float32)[..., None]
        self.level = REFERENCE_EXPOSURE_S  # exposure x gain, adapted frame to frame
        self.previous: np.ndarray | None = None
        self.noise_bank: np.ndarray | None = None

    def _view(self, ego: EgoDrive, t: float) -> _View:
        state = ego.at(t)
        yaw = float(state.yaw[0])
        c, s = np.cos(yaw), np.sin(yaw)
        R_wb = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        position = np.r_[state.xy[0], 0.0] + R_wb @ self.mount
        R_cw = (R_wb @ self.rig.T_base_camera[:3, :3]).T
        return _View(position, R_cw, yaw, float(state.speed[0]), float(state.yaw_rate[0]))

    def render(
        self,
        t: float,
        ego: EgoDrive,
        boxes: Boxes,
        ground: GroundTexture,
        *,
        context: ActiveContext,
        rng: np.random.Generator,
        lamps: np.ndarray | None = None,
    ) -> CameraFrame:
        """One frame at ``t``. ``lamps`` (N, 6): world position and RGB of lit lamps."""
        c = context.conditions
        view = self._view(ego, t)
        sun = sun_direction(c)
        light = _Light(
            sky=0.45 * c.ambient_light + 0.0002,
            sun=c.ambient_light * max(sun[2], 0.0) ** 0.5,
            sun_direction=sun,
            headlights=c.headlights,
        )
        radiance, depth, owner = self._ground(view, ground, light, c)
        self._boxes((radiance, depth, owner), boxes, view, light)
        if lamps is not None and len(lamps):
            self._lamps(radiance, depth, lamps, view)
        self._fog(radiance, depth, c)
        self._glare(radiance, view.R_cw, sun, c)
        self._precipitation(radiance, c, rng)
        exposure, gain = self._auto_expose(radiance)
        self._motion_blur(radiance, view.speed, view.yaw_rate, exposure)
        if context.fault("camera_blackout") is not None:
            radiance[:] = 0.0
        image = self._sensor(radiance, exposure * gain / REFERENCE_EXPOSURE_S, gain, rng)
        if context.fault("camera_frozen") is not None and self.previous is not None:
            image = self.previous
        self.previous = image
        return CameraFrame(image, owner, depth, exposure, gain)

    def _ground(self, view: _View, ground: GroundTexture, light: _Light, c: Conditions):
        w, h = self.rig.image_width, self.rig.image_height
        forward = view.R_cw.T[:2, 2]
        ground.ensure(view.position[:2] + 30.0 * forward / max(np.linalg.norm(forward), 1e-9))
        R_cw = view.R_cw
        H_img_world = self.K @ np.c_[R_cw[:, 0], R_cw[:, 1], -R_cw @ view.position]
        H_img_tile = H_img_world @ np.linalg.inv(ground.world_to_tile)
        border = tuple(round(255 * x) for x in GRASS[0])
        albedo = cv2.warpPerspective(
            ground.albedo, H_img_tile, (w, h), flags=cv2.INTER_LINEAR, borderValue=border
        ).astype(np.float32) * np.float32(1 / 255)
        snow_cover = min(c.snow_rate_mm_h / 6.0, 0.7)
        if snow_cover > 0:
            albedo = albedo * (1 - snow_cover) + 0.85 * snow_cover
        irradiance = (
            np.float32(light.sky + 0.8 * light.sun) + light.headlights * self.headlight_ground
        )
        radiance = np.where(
            self.ground_mask[..., None],
            albedo * irradiance,
            self.sky * np.float32(light.sky / 0.45),
        )
        depth = self.ground_depth.copy()
        owner = np.where(self.ground_mask, -2, -3).astype(np.int32)
        return radiance.astype(np.float32), depth, owner

    def _boxes(self, canvas, boxes: Boxes, view: _View, light: _Light) -> None:
        """Visible faces of every box, far to near, into (radiance, depth, owner)."""
        if len(boxes) == 0:
            return
        radiance, depth, owner = canvas
        position = view.position
        corners = boxes.corners()  # (B, 8, 3)
        cam = (corners - position) @ view.R_cw.T
        closest = np.linalg.norm(corners[:, :4, :2] - position[:2], axis=-1).min(axis=1)
        closest = np.minimum(closest, np.linalg.norm(boxes.centre - position[:2], axis=1))
        wanted = (cam[..., 2] > NEAR_PLANE_M).any(axis=1) & (closest < 200.0)
        order = np.flatnonzero(wanted)[np.argsort(-closest[wanted])]
        # per face (B, 5): world normal, centre, and whether it faces the camera
        local = np.array([n for _, n in FACES])
        cy, sy = np.cos(boxes.yaw)[:, None], np.sin(boxes.yaw)[:, None]
        normals = np.stack(
            [cy * local[:, 0] - sy * local[:, 1], sy * local[:, 0] + cy * local[:, 1],
             np.broadcast_to(local[:, 2], cy.shape[:1] + local[:, 2].shape)],
            axis=-1,
        )  # fmt: skip
        face_index = np.array([index for index, _ in FACES])
        centres = corners[:, face_index].mean(axis=2)  # (B, 5, 3)
        to_face = centres - position
        facing = (to_face * normals).sum(-1) < 0
        distance = np.linalg.norm(to_face, axis=-1)
        lit = light.sky * (0.75 + 0.25 * normals[..., 2])
        lit += light.sun * np.maximum(normals @ light.sun_direction, 0.0)
        if light.headlights > 0:
            lit += light.headlights * self._headlights_on(to_face, normals, view.yaw)
        fx_fy, cx_cy = np.diag(self.K)[:2], self.K[:2, 2]
        for b in order:
            for f in np.flatnonzero(facing[b]):
                pts = cam[b, face_index[f]]
                if (pts[:, 2] < NEAR_PLANE_M).any():
                    pts = _clip_near(pts)
                    if len(pts) < 3:
                        continue
                poly = np.round(((pts[:, :2] / pts[:, 2:3]) * fx_fy + cx_cy) * 16).astype(np.int32)
                colour = tuple(float(x) for x in boxes.colour[b] * lit[b, f])
                cv2.fillConvexPoly(radiance, poly, colour, cv2.LINE_8, 4)
                cv2.fillConvexPoly(depth, poly, float(distance[b, f]), cv2.LINE_8, 4)
                cv2.fillConvexPoly(owner, poly, int(boxes.owner[b]), cv2.LINE_8, 4)

    @staticmethod
    def _headlights_on(to_face, normals, yaw: float) -> np.ndarray:
        """Our low beams' irradiance on faces (vectors from the camera to their centres)."""
        bearing = (np.arctan2(to_face[..., 1], to_face[..., 0]) - yaw + np.pi) % (2 * np.pi) - np.pi
        ground_distance = np.maximum(np.linalg.norm(to_face[..., :2], axis=-1), 3.0)
        facing = np.maximum(-(normals[..., :2] * to_face[..., :2]).sum(-1) / ground_distance, 0.0)
        return headlight_irradiance(ground_distance, bearing) * facing

    def _lamps(self, radiance, depth, lamps, view: _View) -> None:
        """Lamps are small and bright; drawn where nothing nearer hides them."""
        cam = (lamps[:, :3] - view.position) @ view.R_cw.T
        h, w = depth.shape
        for (x, y, z), rgb in zip(cam, lamps[:, 3:], strict=True):
            if z < 1.0:
                continue
            u, v = self.K[0, 0] * x / z + self.K[0, 2], self.K[1, 1] * y / z + self.K[1, 2]
            if not (0 <= u < w and 0 <= v < h):
                continue
            distance = float(np.sqrt(x * x + y * y + z * z))
            if depth[int(v), int(u)] < distance - 0.3:
                continue
            radius = max(round(0.12 * self.K[0, 0] / z), 1)
            cv2.circle(
                radiance, (int(u), int(v)), radius, tuple(float(x) for x in LAMP_RADIANCE * rgb), -1
            )

    @staticmethod
    def _fog(radiance, depth, c: Conditions) -> None:
        if c.fog_extinction_per_m <= 0:
            return
        transmission = np.exp(-c.fog_extinction_per_m * np.minimum(depth, 1e4))[..., None]
        airlight = np.float32(0.75 * c.ambient_light + 0.02 * c.headlights)
        radiance *= transmission
        radiance += airlight * (1.0 - transmission)

    def _glare(self, radiance, R_cw, sun, c: Conditions) -> None:
        """A low sun ahead: veiling glare across the frame, a blooming disc, flare ghosts."""
        strength = np.clip((15.0 - c.sun_elevation_deg) / 10.0, 0.0, 1.0) * (
            c.sun_elevation_deg > -1
        )
        sun_cam = R_cw @ sun
        if strength <= 0 or sun_cam[2] <= 0.05:
            return
        strength *= sun_cam[2] ** 2 * c.ambient_light
        u, v = (sun_cam[:2] / sun_cam[2]) * np.diag(self.K)[:2] + self.K[:2, 2]
        h, w = radiance.shape[:2]
        ys, xs = np.ogrid[:h, :w]
        rho = np.hypot(xs - u, ys - v).astype(np.float32)
        veil = np.float32(strength) * (4.0 * np.exp(-rho / 60.0) + 0.6 * np.exp(-rho / 400.0))
        radiance += veil[..., None] * np.array([1.0, 0.95, 0.85], np.float32)
        centre = np.array([w / 2, h / 2])
        for k, (tint, radius) in enumerate(
            (((0.3, 0.5, 0.3), 30), ((0.5, 0.3, 0.6), 18), ((0.3, 0.4, 0.6), 45))
        ):
            ghost = centre + (centre - np.array([u, v])) * (0.4 + 0.5 * k)
            overlay = np.zeros_like(radiance)
            cv2.circle(
                overlay,
                tuple(int(x) for x in ghost),
                radius,
                tuple(0.4 * strength * x for x in tint),
                -1,
            )
            radiance += overlay

    def _precipitation(self, radiance, c: Conditions, rng: np.random.Generator) -> None:
        h, w = radiance.shape[:2]
        light = np.float32(0.5 * c.ambient_light + 0.3 * c.headlights)
        if c.rain_rate_mm_h > 0:
            rain = c.rain_rate_mm_h / 25.0
            streaks = np.zeros((h, w), np.float32)
            n = int(120 * rain)
            x0, y0 = rng.uniform(0, w, n), rng.uniform(0, h, n)
            length = rng.uniform(8, 35, n)
            slant = rng.normal(0.15, 0.05, n)
            for x, y, ln, sl in zip(x0, y0, length, slant, strict=True):
                cv2.line(streaks, (int(x), int(y)), (int(x + sl * ln), int(y + ln)), 0.25, 1)
            radiance += cv2.GaussianBlur(streaks, (3, 3), 0)[..., None] * light
            sigma = 0.5 + 0.8 * min(rain, 2.0)  # water film on the windscreen
            radiance[:] = cv2.GaussianBlur(radiance, (0, 0), sigma)
            drops = np.zeros((h, w), np.uint8)
            for _ in range(int(6 * rain)):
                cv2.circle(
                    drops,
                    (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                    int(rng.uniform(6, 18)),
                    1,
                    -1,
                )
            if drops.any():
                blurred = cv2.GaussianBlur(radiance, (0, 0), 6.0)
                radiance[drops > 0] = blurred[drops > 0]
        if c.snow_rate_mm_h > 0:
            n = int(250 * c.snow_rate_mm_h / 4.0)
            flakes = np.zeros((h, w), np.float32)
            for x, y, r in zip(
                rng.uniform(0, w, n), rng.uniform(0, h, n), rng.exponential(1.2, n), strict=True
            ):
                cv2.circle(flakes, (int(x), int(y)), int(min(r, 6)), 1.0, -1)
            flakes = cv2.GaussianBlur(flakes, (3, 3), 0)
            radiance += flakes[..., None] * (light + np.float32(0.2 * c.ambient_light))

    def _auto_expose(self, radiance) -> tuple[float, float]:
        """Mean metering, aiming lower in dim scenes (as camera firmware does, to hold
        noise down): a night frame stays darker than a day frame."""
        mean = float(np.mean(np.minimum(radiance[::4, ::4], 2.0)))
        target = TARGET_LEVEL * float(np.clip((mean / 0.2) ** 0.3, 0.35, 1.0))
        wanted = REFERENCE_EXPOSURE_S * target / max(mean, 1e-4)
        self.level *= (wanted / self.level) ** 0.6  # converges over a few frames
        exposure = float(np.clip(self.level, *EXPOSURE_LIMITS_S))
        gain = float(np.clip(self.level / exposure, 1.0, MAX_GAIN))
        self.level = exposure * gain
        return exposure, gain

    def _motion_blur(self, radiance, speed: float, yaw_rate: float, exposure: float) -> None:
        fx, fy = self.K[0, 0], self.K[1, 1]
        sideways = abs(yaw_rate) * exposure * fx
        if sideways >= 1.5:
            n = round(sideways)
            radiance[:] = cv2.blur(radiance, (n, 1))
        h = radiance.shape[0]
        bottom = h - self.K[1, 2]
        downward = bottom**2 * speed * exposure / (fy * self.mount[2])  # ground flow, px
        if downward >= 1.5:
            n = min(round(downward), 61)
            streaked = cv2.blur(radiance, (1, n))
            radiance += self.row_weight * (streaked - radiance)

    def _sensor(self, radiance, level: float, gain: float, rng: np.random.Generator) -> np.ndarray:
        """Photo-electrons with shot and read noise, clipped, gamma-encoded to 8 bits."""
        electrons = np.maximum(radiance, 0.0) * np.float32(level / gain * FULL_WELL_E)
        # unit normal deviates: a window at a random offset into a bank drawn once
        # (fresh draws for every pixel cost more than the rest of the sensor model)
        size = electrons.size
        if self.noise_bank is None:
            self.noise_bank = rng.standard_normal(4 * size, dtype=np.float32)
        start = int(rng.integers(0, 3 * size))
        noise = self.noise_bank[start : start + size].reshape(electrons.shape)
        electrons += noise * np.sqrt(electrons + np.float32(READ_NOISE_E**2))
        signal = np.clip(electrons * np.float32(gain / FULL_WELL_E), 0.0, 1.0)
        return (cv2.pow(signal, 1 / 2.2) * 255.0 + 0.5).astype(np.uint8)
