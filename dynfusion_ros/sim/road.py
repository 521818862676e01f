"""Road geometry: the ego's route, the roads that cross it, and the ground texture.

The route is the ego lane's centreline, built from pieces of linearly varying curvature
(straights, clothoid transitions, arcs), so heading and curvature are exact functions of
arc length: the IMU model differentiates nothing numerically. Everything else on the road
is placed by Frenet offset ``d`` from this line (positive = left, REP-103).

Cross-section, by offset from the road centre (which lies ``LANE_WIDTH / 2`` left of the
ego lane): two lanes out to 3.5 m, a shoulder used for parking and cycling out to 6 m, a
sidewalk out to 8.5 m, then verge where buildings stand.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LANE_WIDTH = 3.5
ROAD_CENTRE_OFFSET = LANE_WIDTH / 2  # road centre, as a Frenet offset from the ego lane
LANE_EDGE = LANE_WIDTH  # lane markings at +-3.5 m from the road centre
SHOULDER_EDGE = 6.0
SIDEWALK_EDGE = 8.5
SAMPLE_SPACING_M = 0.1
CROSS_ROAD_HALF_LENGTH_M = 70.0

# Ground materials: (RGB albedo 0..1, lidar reflectivity 0..1)
GRASS = ((0.22, 0.30, 0.14), 0.25)
ASPHALT = ((0.24, 0.24, 0.25), 0.10)
SHOULDER = ((0.28, 0.28, 0.29), 0.12)
SIDEWALK = ((0.50, 0.49, 0.46), 0.30)
MARKING = ((0.85, 0.85, 0.82), 0.75)


@dataclass(frozen=True)
class Piece:
    """A stretch of road whose curvature goes linearly from ``k0`` to ``k1`` (1/m)."""

    length: float
    k0: float
    k1: float


class Route:
    """The ego lane centreline, sampled every 10 cm; exact heading and curvature."""

    def __init__(self, pieces: list[Piece]) -> None:
        s_parts, k_parts, psi_parts = [], [], []
        s0 = psi0 = 0.0
        for piece in pieces:
            n = max(round(piece.length / SAMPLE_SPACING_M), 1)
            u = np.arange(n) * (piece.length / n)
            slope = (piece.k1 - piece.k0) / piece.length
            s_parts.append(s0 + u)
            k_parts.append(piece.k0 + slope * u)
            psi_parts.append(psi0 + piece.k0 * u + 0.5 * slope * u**2)
            s0 += piece.length
            psi0 += 0.5 * (piece.k0 + piece.k1) * piece.length
        self.s = np.concatenate([*s_parts, [s0]])
        self.curvature = np.concatenate([*k_parts, [pieces[-1].k1]])
        self.heading = np.concatenate([*psi_parts, [psi0]])
        ds = np.diff(self.s)
        mid = 0.5 * (self.heading[1:] + self.heading[:-1])
        xy = np.zeros((len(self.s), 2))
        xy[1:, 0] = np.cumsum(np.cos(mid) * ds)
        xy[1:, 1] = np.cumsum(np.sin(mid) * ds)
        self.xy = xy

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def heading_at(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, self.s, self.heading)

    def curvature_at(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, self.s, self.curvature)

    def point_at(self, s: np.ndarray | float, d: np.ndarray | float = 0.0) -> np.ndarray:
        """World (x, y) at arc length ``s`` and left offset ``d``; shape (..., 2)."""
        s = np.asarray(s, dtype=np.float64)
        psi = self.heading_at(s)
        x = np.interp(s, self.s, self.xy[:, 0]) - np.sin(psi) * d
        y = np.interp(s, self.s, self.xy[:, 1]) + np.cos(psi) * d
        return np.stack([x, y], axis=-1)

    def offset_line(self, d: float, step_m: float = 1.0) -> np.ndarray:
        return self.point_at(np.arange(0.0, self.length, step_m), d)


@dataclass(frozen=True)
class Junction:
    """Where another road meets the route: its centre and the crossing road's direction."""

    s: float
    centre: np.ndarray
    cross_direction: np.ndarray
    turn: int  # +1 left, -1 right, 0 straight across


@dataclass(frozen=True)
class RoadNetwork:
    route: Route
    junctions: tuple[Junction, ...]

    def centrelines(self) -> list[np.ndarray]:
        """Road-centre polylines (world metres): the route's road and each crossing road."""
        lines = [self.route.offset_line(ROAD_CENTRE_OFFSET)]
        for j in self.junctions:
            half = CROSS_ROAD_HALF_LENGTH_M * j.cross_direction
            lines.append(np.stack([j.centre - half, j.centre + half]))
        return lines

    def distance_to_roads(self, points: np.ndarray) -> np.ndarray:
        """Distance (m) from each point (N, 2) to the nearest road centreline."""
        best = np.full(len(points), np.inf)
        for line in self.centrelines():
            a, ab = line[:-1], np.diff(line, axis=0)
            length_sq = np.maximum((ab * ab).sum(-1), 1e-9)
            for start in range(0, len(points), 256):  # bounded memory on long routes
                ap = points[start : start + 256, None, :] - a[None]
                u = np.clip((ap * ab).sum(-1) / length_sq, 0.0, 1.0)
                gap = np.sqrt(((ap - u[..., None] * ab) ** 2).sum(-1)).min(axis=1)
                best[start : start + 256] = np.minimum(best[start : start + 256], gap)
        return best


def _curve(rng: np.random.Generator) -> list[Piece]:
    radius = rng.uniform(60.0, 250.0)
    angle = np.radians(rng.uniform(15.0, 60.0)) * rng.choice([-1.0, 1.0])
    k = np.sign(angle) / radius
    transition = 15.0
    arc = max(abs(angle) * radius - transition, 1.0)
    return [Piece(transition, 0.0, k), Piece(arc, k, k), Piece(transition, k, 0.0)]


def _turn(turn: int) -> list[Piece]:
    """A 90-degree turn at a junction; left turns sweep wider (right-hand traffic)."""
    radius = 11.0 if turn > 0 else 7.5
    k = turn / radius
    transition = 3.0
    arc = (np.pi / 2) / abs(k) - transition
    return [Piece(transition, 0.0, k), Piece(arc, k, k), Piece(transition, k, 0.0)]


def generate_network(rng: np.random.Generator, length_m: float) -> RoadNetwork:
    """A random route of at least ``length_m`` with curves and junctions, never crossing
    itself closer than a block; junctions either turn (90 degrees) or go straight across."""
    pieces: list[Piece] = [Piece(rng.uniform(30.0, 60.0), 0.0, 0.0)]
    junction_marks: list[tuple[float, int]] = []  # (arc length of the junction centre, turn)
    total = pieces[0].length
    while total < length_m + 50.0:
        for _ in range(20):
            kind = rng.choice(["straight", "curve", "turn"], p=[0.35, 0.35, 0.30])
            if kind == "straight":
                candidate = [Piece(rng.uniform(40.0, 120.0), 0.0, 0.0)]
            elif kind == "curve":
                candidate = _curve(rng)
            else:
                turn = int(rng.choice([-1, 1]))
                candidate = [Piece(25.0, 0.0, 0.0), *_turn(turn), Piece(30.0, 0.0, 0.0)]
            trial = Route([*pieces, *candidate])
            old = trial.s < total - 60.0
            new = trial.s > total
            if not old.any():
                break
            gaps = np.linalg.norm(trial.xy[new][::20, None] - trial.xy[old][None, ::20], axis=-1)
            if gaps.min() > 45.0:
                break
        if kind == "turn":
            junction_marks.append(
                (total + 25.0 + 0.5 * sum(p.length for p in candidate[1:4]), turn)
            )
        elif kind == "straight" and candidate[0].length > 60.0 and rng.random() < 0.5:
            junction_marks.append((total + 0.5 * candidate[0].length, 0))
        pieces.extend(candidate)
        total += sum(p.length for p in candidate)
    route = Route(pieces)
    return RoadNetwork(route, tuple(_junction(route, s, turn) for s, turn in junction_marks))


def _junction(route: Route, s: float, turn: int) -> Junction:
    if turn == 0:
        psi = float(route.heading_at(s))
        centre = route.point_at(s, ROAD_CENTRE_OFFSET)
        return Junction(s, centre, np.array([-np.sin(psi), np.cos(psi)]), 0)
    # the crossing road continues the incoming road straight on; the junction centre is
    # where the incoming and outgoing road centrelines meet
    s_in, s_out = s - 20.0, s + 20.0
    psi_in, psi_out = float(route.heading_at(s_in)), float(route.heading_at(s_out))
    u_in = np.array([np.cos(psi_in), np.sin(psi_in)])
    u_out = np.array([np.cos(psi_out), np.sin(psi_out)])
    p_in = route.point_at(s_in, ROAD_CENTRE_OFFSET)
    p_out = route.point_at(s_out, ROAD_CENTRE_OFFSET)
    lengths = np.linalg.solve(np.stack([u_in, -u_out], axis=1), p_out - p_in)
    return Junction(s, p_in + lengths[0] * u_in, u_in, turn)


class GroundTexture:
    """Top-down albedo and lidar reflectivity of the ground around a point, in tiles.

    Drawing the whole world at 10 cm would take gigabytes; a tile of ``TILE_PX`` pixels
    is redrawn (a few ms) only when the point of interest moves ``REDRAW_M`` from its
    centre. ``world_to_tile`` (3x3) maps world metres to tile pixels.
    """

    TILE_PX = 2048
    METRES_PER_PX = 0.1
    REDRAW_M = 25.0

    def __init__(self, network: RoadNetwork) -> None:
        self.network = network
        self.lines = network.centrelines()
        self.dashes = self._dashes(self.lines[0]) + [
            dash for line in self.lines[1:] for dash in self._dashes(np.linspace(*line, 300))
        ]
        self.centre = np.array([np.inf, np.inf])
        self.albedo = np.zeros((self.TILE_PX, self.TILE_PX, 3), np.uint8)  # x 255
        self.reflectivity = np.zeros((self.TILE_PX, self.TILE_PX), np.uint8)  # x 255
        self.world_to_tile = np.eye(3)

    @staticmethod
    def _dashes(line: np.ndarray, dash_m: float = 3.0, period_m: float = 9.0) -> list[np.ndarray]:
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        on = np.r_[False, (s % period_m) < dash_m, False]
        starts = np.flatnonzero(on[1:-1] & ~on[:-2])
        ends = np.flatnonzero(on[1:-1] & ~on[2:])
        return [line[a : b + 1] for a, b in zip(starts, ends, strict=True) if b > a]

    def ensure(self, centre_xy: np.ndarray) -> None:
        if np.linalg.norm(centre_xy - self.centre) < self.REDRAW_M:
            return
        self.centre = np.asarray(centre_xy, dtype=np.float64).copy()
        scale = 1.0 / self.METRES_PER_PX
        half = self.TILE_PX / 2
        # image rows grow southwards: row = half - (y - cy) * scale
        self.world_to_tile = np.array(
            [
                [scale, 0.0, half - scale * self.centre[0]],
                [0.0, -scale, half + scale * self.centre[1]],
                [0.0, 0.0, 1.0],
            ]
        )
        self._draw()

    def _px(self, line: np.ndarray) -> np.ndarray:
        h = np.c_[line, np.ones(len(line))] @ self.world_to_tile.T
        return np.round(h[:, :2] * 16).astype(np.int32)  # 4 fractional bits for cv2

    def _near(self, line: np.ndarray) -> np.ndarray | None:
        """The part of a polyline that can touch the tile (drawing all of it is slow)."""
        reach = self.TILE_PX * self.METRES_PER_PX
        near = np.flatnonzero(np.abs(line - self.centre).max(axis=1) < reach)
        if len(near) < 2:
            return None
        return line[max(near[0] - 1, 0) : near[-1] + 2]

    def _stroke(self, lines: list[np.ndarray], width_m: float, material) -> None:
        colour, reflect = material
        thickness = max(round(width_m / self.METRES_PER_PX), 1)
        pts = [self._px(part) for line in lines if (part := self._near(line)) is not None]
        if not pts:
            return
        rgb = tuple(255.0 * c for c in colour)
        cv2.polylines(self.albedo, pts, False, rgb, thickness, cv2.LINE_AA, shift=4)
        cv2.polylines(self.reflectivity, pts, False, 255.0 * reflect, thickness, cv2.LINE_AA, 4)

    def _draw(self) -> None:
        self.albedo[:] = tuple(round(255 * c) for c in GRASS[0])
        self.reflectivity[:] = round(255 * GRASS[1])
        route = self.network.route
        crossings = self.lines[1:]
        self._stroke(self.lines, 2 * SIDEWALK_EDGE, SIDEWALK)
        self._stroke(self.lines, 2 * SHOULDER_EDGE, SHOULDER)
        self._stroke(self.lines, 2 * LANE_EDGE, ASPHALT)
        edges = [route.offset_line(ROAD_CENTRE_OFFSET + side * LANE_EDGE) for side in (-1, 1)]
        for line in crossings:
            normal = np.array([[0.0, -1.0], [1.0, 0.0]]) @ (line[1] - line[0])
            normal /= np.linalg.norm(normal)
            edges += [line + side * LANE_EDGE * normal for side in (-1, 1)]
        self._stroke(edges, 0.15, MARKING)
        self._stroke(self.dashes, 0.15, MARKING)
        # junction boxes are plain asphalt: no lane markings run through them
        for junction in self.network.junctions:
            centre = self._px(junction.centre[None])[0]
            radius = round(LANE_EDGE * 1.6 / self.METRES_PER_PX) * 16
            rgb = tuple(255.0 * c for c in ASPHALT[0])
            cv2.circle(self.albedo, tuple(centre), radius, rgb, -1, cv2.LINE_AA, 4)
            cv2.circle(
                self.reflectivity, tuple(centre), radius, 255.0 * ASPHALT[1], -1, cv2.LINE_AA, 4
            )

    def sample_reflectivity(self, xy: np.ndarray) -> np.ndarray:
        """Lidar reflectivity of the ground at world points (N, 2); grass off the tile."""
        h = np.c_[xy, np.ones(len(xy))] @ self.world_to_tile.T
        col = np.round(h[:, 0]).astype(np.int64)
        row = np.round(h[:, 1]).astype(np.int64)
        inside = (col >= 0) & (col < self.TILE_PX) & (row >= 0) & (row < self.TILE_PX)
        out = np.full(len(xy), GRASS[1], np.float32)
        out[inside] = self.reflectivity[row[inside], col[inside]] / np.float32(255.0)
        return out
