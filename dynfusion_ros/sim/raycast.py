"""Rays against the world: the flat ground and yaw-oriented boxes.

Every solid thing in the simulated world (car bodies and cabins, pedestrians' torsos,
poles, walls, buildings) is a box that can only yaw, which keeps the slab test cheap
enough to cast a full lidar sweep in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Boxes:
    """Boxes as parallel arrays (world frame). ``owner`` is the object index, -1 for
    structure; ``part`` names the object's part (0 = whole body)."""

    centre: np.ndarray  # (B, 2) x, y of the footprint centre
    yaw: np.ndarray  # (B,)
    z0: np.ndarray  # (B,) bottom
    z1: np.ndarray  # (B,) top
    half_length: np.ndarray  # (B,)
    half_width: np.ndarray  # (B,)
    colour: np.ndarray  # (B, 3) albedo 0..1
    reflectivity: np.ndarray  # (B,) lidar reflectivity 0..1
    owner: np.ndarray  # (B,) int

    def __len__(self) -> int:
        return len(self.yaw)

    def extent(self, index: int) -> tuple[float, float, float, float]:
        return self.half_length[index], self.half_width[index], self.z0[index], self.z1[index]

    def subset(self, index: np.ndarray) -> Boxes:
        return Boxes(**{name: value[index] for name, value in vars(self).items()})

    @staticmethod
    def concatenate(parts: list[Boxes]) -> Boxes:
        return Boxes(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in vars(parts[0])}
        )

    def corners(self) -> np.ndarray:
        """(B, 8, 3) corners: bottom four counter-clockwise, then the top four."""
        return box_corners(
            self.centre, self.yaw, self.half_length, self.half_width, (self.z0, self.z1)
        )


def box_corners(centre, yaw, half_length, half_width, z_range) -> np.ndarray:
    """(B, 8, 3) corners of yaw-only boxes (footprint centre (B, 2), bottom and top
    heights in ``z_range``): bottom four counter-clockwise, then the top four."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    local_x = signs[None, :, 0] * half_length[:, None]
    local_y = signs[None, :, 1] * half_width[:, None]
    x = centre[:, 0:1] + c * local_x - s * local_y
    y = centre[:, 1:2] + s * local_x + c * local_y
    bottom, top = (np.stack([x, y, np.broadcast_to(z[:, None], x.shape)], -1) for z in z_range)
    return np.concatenate([bottom, top], axis=1)


def to_box_frame(points: np.ndarray, centre: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """World vectors/points (..., 3) into box frames (x along the box, origin at the
    footprint centre on z = 0); ``centre`` (..., 2) and ``yaw`` (...) broadcast."""
    c, s = np.cos(yaw), np.sin(yaw)
    dx = points[..., 0] - centre[..., 0]
    dy = points[..., 1] - centre[..., 1]
    z = np.broadcast_to(points[..., 2], dx.shape)
    return np.stack([c * dx + s * dy, -s * dx + c * dy, z], axis=-1)


def rotate_to_box(vectors: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    vx, vy = vectors[..., 0], vectors[..., 1]
    vz = np.broadcast_to(vectors[..., 2], vx.shape)
    x, y = c * vx + s * vy, -s * vx + c * vy
    return np.stack([x, y, np.broadcast_to(vz, x.shape)], axis=-1)


def slab_hit(
    origin: np.ndarray, direction: np.ndarray, extent: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance along each ray into its box (inf on a miss or from inside), and
    the axis (0 x, 1 y, 2 z) of the face it entered through. Rays in box frames;
    ``extent`` is (half length, half width, bottom, top), arrays or scalars."""
    half_length, half_width, z0, z1 = extent
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
        lo = np.stack([-half_length, -half_width, z0], axis=-1)
        hi = np.stack([half_length, half_width, z1], axis=-1)
        t_a = (lo - origin) * inv
        t_b = (hi - origin) * inv
    near = np.fmin(t_a, t_b)
    far = np.fmax(t_a, t_b)
    axis = np.argmax(near, axis=-1)
    t_enter = np.take_along_axis(near, axis[..., None], axis=-1)[..., 0]
    t_exit = np.min(far, axis=-1)
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis


def first_hits(
    origins: np.ndarray, directions: np.ndarray, boxes: Boxes
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest box hit for each of R rays against every box: (distance, box index or -1).

    A dense R x B test, for modest numbers of rays (visibility checks, radar)."""
    if len(boxes) == 0:
        return np.full(len(origins), np.inf), np.full(len(origins), -1)
    o = to_box_frame(origins[:, None, :], boxes.centre[None], boxes.yaw[None])
    d = rotate_to_box(directions[:, None, :], boxes.yaw[None])
    t, _ = slab_hit(o, d, (boxes.half_length, boxes.half_width, boxes.z0, boxes.z1))
    best = np.argmin(t, axis=1)
    distance = t[np.arange(len(origins)), best]
    return distance, np.where(np.isfinite(distance), best, -1)


@dataclass(frozen=True)
class Scene:
    """What sensors can hit at one instant: boxes posed at ``t_s``, each moving at
    ``box_velocity`` (B, 2) (zero for structure)."""

    t_s: float
    boxes: Boxes
    box_velocity: np.ndarray
