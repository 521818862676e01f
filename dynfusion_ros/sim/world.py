"""The simulated world: static structure along the roads, and traffic that moves.

Objects are built from a few boxes each (a car is a body, a glass cabin and four wheels;
a cyclist two wheels, a frame and a rider), so camera and lidar see class-specific
shapes, while ground truth is the object's whole bounding box. Motion is analytic:
objects along the route move in Frenet coordinates (arc length ``s``, offset ``d``),
cross traffic along straight lines, so every object's pose is exact at any time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.types import ObjectClass
from dynfusion_ros.sim.raycast import Boxes
from dynfusion_ros.sim.road import (
    CROSS_ROAD_HALF_LENGTH_M,
    LANE_WIDTH,
    ROAD_CENTRE_OFFSET,
    SHOULDER_EDGE,
    SIDEWALK_EDGE,
    RoadNetwork,
)

CAR, PEDESTRIAN, CYCLIST = ObjectClass.CAR, ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST

# Size ranges (length, width, height in m), as in driving datasets.
SIZE_RANGES = {
    CAR: ((3.9, 4.9), (1.70, 1.95), (1.40, 1.70)),
    PEDESTRIAN: ((0.45, 0.70), (0.50, 0.70), (1.55, 1.90)),
    CYCLIST: ((1.60, 1.90), (0.55, 0.70), (1.60, 1.85)),
}
# Radar cross-section (dBsm): a car is a large corner reflector, a person is water.
RCS_DBSM = {CAR: 10.0, PEDESTRIAN: -8.0, CYCLIST: -3.0}

BODY, GLASS, TYRE, SKIN, SECOND = range(5)  # colour sources of object parts
PART_COLOURS = {GLASS: (0.06, 0.08, 0.11), TYRE: (0.04, 0.04, 0.04), SKIN: (0.72, 0.55, 0.45)}
PART_REFLECTIVITY = {BODY: 0.55, GLASS: 0.08, TYRE: 0.05, SKIN: 0.35, SECOND: 0.30}
# Parts as fractions of (L, W, H): x centre, y centre, z bottom, z top, length, width, colour
PARTS = {
    CAR: (
        (0.00, 0.00, 0.18, 0.56, 1.00, 1.00, BODY),
        (-0.08, 0.00, 0.56, 1.00, 0.55, 0.90, GLASS),
        *((x, y, 0.0, 0.30, 0.16, 0.14, TYRE) for x in (-0.32, 0.32) for y in (-0.43, 0.43)),
    ),
    PEDESTRIAN: (
        (0.00, 0.00, 0.00, 0.47, 0.55, 0.55, SECOND),
        (0.00, 0.00, 0.47, 0.85, 0.70, 1.00, BODY),
        (0.00, 0.00, 0.87, 1.00, 0.40, 0.40, SKIN),
    ),
    CYCLIST: (
        (-0.32, 0.00, 0.00, 0.40, 0.36, 0.12, TYRE),
        (0.32, 0.00, 0.00, 0.40, 0.36, 0.12, TYRE),
        (0.00, 0.00, 0.25, 0.50, 0.60, 0.15, SECOND),
        (-0.05, 0.00, 0.45, 0.86, 0.35, 0.75, BODY),
        (0.00, 0.00, 0.87, 1.00, 0.16, 0.35, SKIN),
    ),
}
CAR_PAINTS = np.array(
    [
        (0.85, 0.85, 0.86),
        (0.08, 0.08, 0.09),
        (0.55, 0.56, 0.58),
        (0.62, 0.08, 0.07),
        (0.10, 0.20, 0.55),
        (0.30, 0.32, 0.34),
        (0.80, 0.65, 0.15),
    ]
)


@dataclass
class ObjectStates:
    """Every object at one instant (world frame)."""

    object_class: np.ndarray  # (N,) ObjectClass values
    size: np.ndarray  # (N, 3) length, width, height
    xy: np.ndarray  # (N, 2) footprint centre
    yaw: np.ndarray  # (N,)
    velocity: np.ndarray  # (N, 2)
    valid: np.ndarray  # (N,) bool: on the map at this instant


@dataclass
class Traffic:
    """Object attributes, and the parameters of their motion (see ``states``)."""

    object_class: np.ndarray
    size: np.ndarray
    colour: np.ndarray  # (N, 2, 3): body and second colour
    # along the route: s(t) = s0 + vs t; d(t) = clip(d0 + vd (t - t0), d_lo, d_hi)
    on_route: np.ndarray  # (N,) bool; else on a straight line
    s0: np.ndarray
    vs: np.ndarray
    d0: np.ndarray
    vd: np.ndarray
    t0: np.ndarray
    d_lo: np.ndarray
    d_hi: np.ndarray
    facing: np.ndarray  # yaw relative to the route tangent / line direction
    # on a line: xy(t) = origin + direction * (p0 + v t)
    origin: np.ndarray  # (N, 2)
    direction: np.ndarray  # (N, 2)

    def __len__(self) -> int:
        return len(self.object_class)

    def states(self, t: float, network: RoadNetwork) -> ObjectStates:
        route = network.route
        d_raw = self.d0 + self.vd * (t - self.t0)
        d = np.clip(d_raw, self.d_lo, self.d_hi)
        vd = np.where((d_raw > self.d_lo) & (d_raw < self.d_hi), self.vd, 0.0)
        s = self.s0 + self.vs * t
        psi = route.heading_at(s)
        tangent = np.stack([np.cos(psi), np.sin(psi)], axis=-1)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
        route_xy = route.point_at(s, d)
        route_velocity = self.vs[:, None] * tangent + vd[:, None] * normal
        line_p = self.s0 + self.vs * t  # line objects reuse s0/vs as p0/v
        line_xy = self.origin + self.direction * line_p[:, None]
        line_yaw = np.arctan2(self.direction[:, 1], self.direction[:, 0])
        on = self.on_route
        xy = np.where(on[:, None], route_xy, line_xy)
        yaw = np.where(on, psi, line_yaw) + self.facing
        velocity = np.where(on[:, None], route_velocity, self.direction * self.vs[:, None])
        valid = np.where(
            on, (s >= 0.0) & (s <= route.length), np.abs(line_p) < CROSS_ROAD_HALF_LENGTH_M
        )
        return ObjectStates(self.object_class, self.size, xy, yaw, velocity, valid)


class _TrafficBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[dict] = []

    def add(self, cls: ObjectClass, **motion) -> None:
        rng = self.rng
        size = [rng.uniform(*r) for r in SIZE_RANGES[cls]]
        if cls == CAR:
            body = CAR_PAINTS[rng.integers(len(CAR_PAINTS))]
            second = body * 0.6
        else:
            body, second = rng.uniform(0.05, 0.8, 3), rng.uniform(0.05, 0.5, 3)
        row = {
            "object_class": int(cls),
            "size": size,
            "colour": [body, second],
            "on_route": True,
            "s0": 0.0,
            "vs": 0.0,
            "d0": 0.0,
            "vd": 0.0,
            "t0": 0.0,
            "d_lo": -np.inf,
            "d_hi": np.inf,
            "facing": 0.0,
            "origin": np.zeros(2),
            "direction": np.array([1.0, 0.0]),
        }
        row.update(motion)
        self.rows.append(row)

    def build(self) -> Traffic:
        return Traffic(**{k: np.array([r[k] for r in self.rows]) for k in self.rows[0]})


# Frenet offsets (from the ego lane centre) of the places things live.
ONCOMING_LANE = LANE_WIDTH
RIGHT_PARKING, LEFT_PARKING = ROAD_CENTRE_OFFSET - 4.85, ROAD_CENTRE_OFFSET + 4.85
RIGHT_BIKE, LEFT_BIKE = ROAD_CENTRE_OFFSET - 4.2, ROAD_CENTRE_OFFSET + 4.2
SIDEWALK_MID = (SHOULDER_EDGE + SIDEWALK_EDGE) / 2
RIGHT_SIDEWALK, LEFT_SIDEWALK = ROAD_CENTRE_OFFSET - SIDEWALK_MID, ROAD_CENTRE_OFFSET + SIDEWALK_MID


def generate_traffic(
    rng: np.random.Generator, network: RoadNetwork, duration_s: float, density: float
) -> Traffic:
    """Moving and parked objects along the route and across its junctions."""
    length = network.route.length
    build = _TrafficBuilder(rng)
    near_junction = np.array([j.s for j in network.junctions] + [-1e9])

    def poisson(per_km: float) -> int:
        return int(rng.poisson(density * per_km * length / 1000.0))

    def clear_of_junctions(s: float, margin: float = 18.0) -> bool:
        return bool(np.all(np.abs(near_junction - s) > margin))

    for _ in range(poisson(4.0)):  # ahead of the ego, in its lane
        build.add(CAR, s0=rng.uniform(40.0, length), vs=rng.uniform(8.0, 13.0))
    for _ in range(poisson(12.0)):  # oncoming
        s0 = rng.uniform(0.0, length + 12.0 * duration_s)
        build.add(CAR, s0=s0, vs=-rng.uniform(8.0, 13.0), d0=ONCOMING_LANE, facing=np.pi)
    parked: list[float] = []
    for _ in range(poisson(30.0)):
        s = rng.uniform(15.0, length)
        if clear_of_junctions(s) and all(abs(s - p) > 7.0 for p in parked):
            parked.append(s)
            side = rng.choice([RIGHT_PARKING, LEFT_PARKING])
            build.add(CAR, s0=s, d0=side, facing=rng.choice([0.0, np.pi]))
    for _ in range(poisson(6.0)):
        if rng.random() < 0.7:
            build.add(
                CYCLIST, s0=rng.uniform(20.0, length), vs=rng.uniform(3.5, 6.5), d0=RIGHT_BIKE
            )
        else:
            s0 = rng.uniform(0.0, length + 5.0 * duration_s)
            build.add(CYCLIST, s0=s0, vs=-rng.uniform(3.5, 6.5), d0=LEFT_BIKE, facing=np.pi)
    for _ in range(poisson(50.0)):  # on the sidewalks, walking or standing
        speed = 0.0 if rng.random() < 0.25 else rng.uniform(0.8, 1.6) * rng.choice([-1, 1])
        side = rng.choice([RIGHT_SIDEWALK, LEFT_SIDEWALK])
        build.add(
            PEDESTRIAN,
            s0=rng.uniform(5.0, length),
            vs=speed,
            d0=side + rng.uniform(-0.6, 0.6),
            facing=np.pi if speed < 0 else rng.uniform(-np.pi, np.pi) * (speed == 0),
        )
    for junction in network.junctions:  # people crossing, cars across the junction
        for _ in range(rng.poisson(1.2 * density)):
            leftwards = rng.random() < 0.5
            start, end = (RIGHT_SIDEWALK, LEFT_SIDEWALK)[:: 1 if leftwards else -1]
            speed = rng.uniform(1.1, 1.6) * (1 if leftwards else -1)
            build.add(
                PEDESTRIAN,
                s0=junction.s - 14.0 + rng.uniform(-1.5, 1.5),
                d0=start,
                vd=speed,
                t0=rng.uniform(0.0, duration_s),
                d_lo=min(start, end),
                d_hi=max(start, end),
                facing=np.pi / 2 if leftwards else -np.pi / 2,
            )
        if junction.turn != 0:
            continue  # the crossing road is the route's own road there
        for _ in range(rng.poisson(1.5 * density)):
            direction = junction.cross_direction * rng.choice([-1.0, 1.0])
            right = np.array([direction[1], -direction[0]])
            speed = rng.uniform(7.0, 12.0)
            build.add(
                CAR,
                on_route=False,
                origin=junction.centre + right * ROAD_CENTRE_OFFSET,
                direction=direction,
                s0=-speed * rng.uniform(0.0, duration_s),
                vs=speed,
            )
    return build.build()


def object_parts(states: ObjectStates, traffic: Traffic, index: np.ndarray) -> Boxes:
    """The boxes that make up the objects ``index`` (their owner is the object index)."""
    parts: list[Boxes] = []
    for cls, layout in PARTS.items():
        chosen = index[traffic.object_class[index] == int(cls)]
        if len(chosen) == 0:
            continue
        table = np.array(layout)
        n, p = len(chosen), len(table)
        size = traffic.size[chosen]
        yaw = np.repeat(states.yaw[chosen], p)
        c, s = np.cos(yaw), np.sin(yaw)
        local_x = (table[None, :, 0] * size[:, 0:1]).ravel()
        local_y = (table[None, :, 1] * size[:, 1:2]).ravel()
        centre = np.repeat(states.xy[chosen], p, axis=0)
        centre = centre + np.stack([c * local_x - s * local_y, s * local_x + c * local_y], -1)
        source = np.tile(table[:, 6].astype(int), n)
        colour = np.repeat(traffic.colour[chosen, 0], p, axis=0)
        colour[source == SECOND] = np.repeat(traffic.colour[chosen, 1], p, axis=0)[source == SECOND]
        for key, value in PART_COLOURS.items():
            colour[source == key] = value
        parts.append(
            Boxes(
                centre=centre,
                yaw=yaw,
                z0=(table[None, :, 2] * size[:, 2:3]).ravel(),
                z1=(table[None, :, 3] * size[:, 2:3]).ravel(),
                half_length=0.5 * (table[None, :, 4] * size[:, 0:1]).ravel(),
                half_width=0.5 * (table[None, :, 5] * size[:, 1:2]).ravel(),
                colour=colour,
                reflectivity=np.vectorize(PART_REFLECTIVITY.get)(source).astype(np.float64),
                owner=np.repeat(chosen, p),
            )
        )
    return Boxes.concatenate(parts) if parts else empty_boxes()


def empty_boxes() -> Boxes:
    z = np.zeros(0)
    return Boxes(z.reshape(0, 2), z, z, z, z, z, z.reshape(0, 3), z, np.zeros(0, int))


def generate_structure(rng: np.random.Generator, network: RoadNetwork) -> Boxes:
    """Buildings, walls and poles beside the roads, clear of every road and sidewalk."""
    route = network.route
    rows: list[tuple] = []  # (s, offset from road centre, length, depth, height, colour, refl)
    for side in (-1.0, 1.0):
        s = rng.uniform(0.0, 10.0)
        while s < route.length:
            kind = rng.random()
            if kind < 0.6:
                length, depth = rng.uniform(8.0, 25.0), rng.uniform(8.0, 16.0)
                height = rng.uniform(5.0, 18.0)
                grey = rng.uniform(0.35, 0.7)
                colour = (grey, grey * rng.uniform(0.85, 1.0), grey * rng.uniform(0.75, 1.0))
                rows.append(
                    (
                        s + length / 2,
                        side * (SIDEWALK_EDGE + rng.uniform(1.0, 5.0) + depth / 2),
                        length,
                        depth,
                        height,
                        colour,
                        0.45,
                    )
                )
                s += length + rng.uniform(3.0, 15.0)
            elif kind < 0.75:
                length = rng.uniform(15.0, 40.0)
                rows.append(
                    (
                        s + length / 2,
                        side * (SIDEWALK_EDGE + 0.6),
                        length,
                        0.3,
                        rng.uniform(1.2, 2.5),
                        (0.55, 0.5, 0.45),
                        0.35,
                    )
                )
                s += length + rng.uniform(3.0, 10.0)
            else:
                s += rng.uniform(10.0, 30.0)
        for s_pole in np.arange(rng.uniform(0.0, 30.0), route.length, 30.0):
            rows.append(
                (s_pole, side * (SHOULDER_EDGE + 0.4), 0.25, 0.25, 7.0, (0.45, 0.45, 0.47), 0.6)
            )
    s_mid, offset, length, depth, height, colour, reflectivity = (
        np.array(c) for c in zip(*rows, strict=True)
    )
    psi = route.heading_at(s_mid)
    boxes = Boxes(
        centre=route.point_at(s_mid, ROAD_CENTRE_OFFSET + offset),
        yaw=psi,
        z0=np.zeros(len(rows)),
        z1=height,
        half_length=length / 2,
        half_width=depth / 2,
        colour=colour,
        reflectivity=reflectivity.astype(np.float64),
        owner=np.full(len(rows), -1),
    )
    corners = boxes.corners()[:, :4, :2]
    edges = 0.5 * (corners + np.roll(corners, 1, axis=1))
    probe = np.concatenate([corners, edges, boxes.centre[:, None]], axis=1)
    clearance = network.distance_to_roads(probe.reshape(-1, 2)).reshape(len(rows), -1).min(axis=1)
    is_pole = length < 1.0
    keep = clearance > np.where(is_pole, SHOULDER_EDGE + 0.2, SIDEWALK_EDGE + 0.3)
    return boxes.subset(keep)
