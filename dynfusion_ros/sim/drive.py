"""One simulated drive: the world, the ego's motion and every sensor, frame by frame.

A frame is one camera period (100 ms at 10 Hz): the camera image at the frame time, the
lidar sweep that faces forward at that instant, the radar scans and IMU samples that
fall in the period, ground-truth objects at every camera and radar stamp, and the ego's
true state at every IMU stamp (every other sensor's stamp is among them). Every random stream comes
from the seed, one stream per purpose, so the same seed gives the same drive, and a new
sensor or a changed model does not reshuffle the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from dynfusion_ros.core.types import NS_PER_S, Box3D, ObjectClass
from dynfusion_ros.sim.camera import CameraFrame, CameraModelSim
from dynfusion_ros.sim.ego import CRUISE_SPEED, EgoDrive, EgoState
from dynfusion_ros.sim.imu import ImuErrors, ImuModel
from dynfusion_ros.sim.lidar import LidarModel, LidarSweep
from dynfusion_ros.sim.radar import RadarModel, RadarScan
from dynfusion_ros.sim.raycast import Boxes, Scene, first_hits
from dynfusion_ros.sim.rig import SensorRig
from dynfusion_ros.sim.road import GroundTexture, generate_network
from dynfusion_ros.sim.scenario import ActiveContext, Scenario
from dynfusion_ros.sim.world import (
    ObjectStates,
    generate_structure,
    generate_traffic,
    object_parts,
)

START_NS = 1_767_225_600 * NS_PER_S  # 2026-01-01T00:00:00Z: a fixed epoch, reproducible bags
GROUND_TRUTH_RANGE_M = 100.0
SCENE_RADIUS_M = 160.0
STREAMS = ("network", "traffic", "structure", "ego", "camera", "lidar", "radar", "imu", "delivery")


@dataclass(frozen=True)
class TruthObject:
    """An object in base_link at the frame time; ``velocity`` (vx, vy) is over ground."""

    track_id: str
    object_class: ObjectClass
    box: Box3D
    velocity: tuple[float, float]
    index: int


@dataclass
class SimFrame:
    index: int
    t_s: float
    context: ActiveContext
    ego: EgoState  # at t_s
    camera: CameraFrame
    lidar: LidarSweep
    radar: list[tuple[float, RadarScan]]
    imu_t_s: np.ndarray
    imu_force: np.ndarray
    imu_rate: np.ndarray
    ego_track: EgoState  # true ego state at every IMU time (which include every stamp)
    truth: list[tuple[float, list[TruthObject]]] = field(default_factory=list)

    @property
    def objects(self) -> list[TruthObject]:
        """Ground-truth objects at the frame time."""
        return self.truth[0][1]

    @staticmethod
    def stamp_ns(t_s: float) -> int:
        return START_NS + round(t_s * NS_PER_S)


class Simulation:
    """Build a world for a scenario and seed, then iterate its frames."""

    def __init__(
        self,
        scenario: Scenario,
        duration_s: float,
        seed: int,
        rig: SensorRig | None = None,
        imu_errors: ImuErrors | None = None,
    ) -> None:
        if not duration_s > 0:
            raise ValueError(f"duration must be positive, got {duration_s}")
        self.scenario, self.duration_s, self.seed = scenario, float(duration_s), seed
        self.rig = rig or SensorRig()
        self.rngs = dict(
            zip(
                STREAMS,
                (
                    np.random.default_rng(s)
                    for s in np.random.SeedSequence(seed).spawn(len(STREAMS))
                ),
                strict=True,
            )
        )
        length = CRUISE_SPEED * duration_s + 150.0
        self.network = generate_network(self.rngs["network"], length)
        self.traffic = generate_traffic(
            self.rngs["traffic"], self.network, duration_s, scenario.traffic_density
        )
        self.structure = generate_structure(self.rngs["structure"], self.network)
        self.ego = EgoDrive(self.network, self.traffic, duration_s + 0.5, self.rngs["ego"])
        self.ground = GroundTexture(self.network)
        self.camera = CameraModelSim(self.rig)
        self.lidar = LidarModel(self.rig)
        self.radar = RadarModel(self.rig)
        self.imu = ImuModel(self.rig.imu_rate_hz, imu_errors or ImuErrors(), self.rngs["imu"])
        self.frame_count = int(np.floor(duration_s * self.rig.camera_rate_hz + 1e-9))

    def objects_at(self, t: float) -> ObjectStates:
        return self.traffic.states(t, self.network)

    def scene(self, t: float, centre: np.ndarray) -> tuple[ObjectStates, Scene]:
        """Objects at ``t``, and the scene (boxes, velocities) within reach of ``centre``."""
        states = self.objects_at(t)
        near = states.valid & (np.linalg.norm(states.xy - centre, axis=1) < SCENE_RADIUS_M)
        parts = object_parts(states, self.traffic, np.flatnonzero(near))
        reach = np.linalg.norm(self.structure.centre - centre, axis=1) < SCENE_RADIUS_M + 30
        boxes = Boxes.concatenate([self.structure.subset(reach), parts])
        velocity = np.zeros((len(boxes), 2))
        moving = boxes.owner >= 0
        velocity[moving] = states.velocity[boxes.owner[moving]]
        return states, Scene(t, boxes, velocity)

    def lamps(self, states: ObjectStates, centre: np.ndarray) -> np.ndarray:
        """Head lamps (white) and tail lamps (red) of the cars near ``centre``: (N, 6)."""
        cars = np.flatnonzero(
            states.valid
            & (states.object_class == int(ObjectClass.CAR))
            & (np.linalg.norm(states.xy - centre, axis=1) < SCENE_RADIUS_M)
        )
        if len(cars) == 0:
            return np.zeros((0, 6))
        length, width = states.size[cars, 0], states.size[cars, 1]
        c, s = np.cos(states.yaw[cars]), np.sin(states.yaw[cars])
        rows = []
        for along, colour in ((0.5, (1.0, 0.95, 0.8)), (-0.5, (0.9, 0.05, 0.02))):
            for side in (-0.36, 0.36):
                lx, ly = along * length + 0.02 * np.sign(along), side * width
                x = states.xy[cars, 0] + c * lx - s * ly
                y = states.xy[cars, 1] + s * lx + c * ly
                rows.append(np.c_[x, y, np.full(len(cars), 0.65), np.tile(colour, (len(cars), 1))])
        return np.concatenate(rows)

    def frames(self) -> Iterator[SimFrame]:
        for k in range(self.frame_count):
            yield self.frame(k)

    def frame(self, k: int) -> SimFrame:
        """Frame ``k``; frames must be taken in order (exposure and IMU biases carry over)."""
        rngs = self.rngs
        period = 1.0 / self.rig.camera_rate_hz
        t = k * period
        context = self.scenario.at(t, self.duration_s)
        ego = self.ego.at(t)
        states, scene = self.scene(t, ego.xy[0])
        lamps = self.lamps(states, ego.xy[0]) if context.conditions.headlights > 0.3 else None
        camera = self.camera.render(
            t, self.ego, scene.boxes, self.ground, context=context, rng=rngs["camera"], lamps=lamps
        )
        sweep_start = t - 0.5 / self.rig.lidar_rate_hz
        lidar = self.lidar.sweep(
            sweep_start, self.ego, scene, self.ground, context=context, rng=rngs["lidar"]
        )
        radar, truth = [], []
        for t_radar in t + np.arange(0.0, period - 1e-9, 1.0 / self.rig.radar_rate_hz):
            radar_states = states if t_radar == t else self.objects_at(t_radar)
            radar_ego = self.ego.at(t_radar)
            scan = self.radar.scan(
                radar_ego,
                radar_states,
                scene.boxes,
                self.scenario.at(t_radar, self.duration_s),
                rngs["radar"],
            )
            radar.append((t_radar, scan))
            truth.append((t_radar, self._ground_truth(radar_states, scene.boxes, radar_ego)))
        imu_t = t + np.arange(0.0, period - 1e-9, 1.0 / self.rig.imu_rate_hz)
        jump = context.fault("imu_bias_jump")
        bias_jump = (
            (float(jump.params["accel_mps2"]), float(jump.params["gyro_radps"])) if jump else None
        )
        track = self.ego.at(imu_t)
        force, rate = self.imu.measure(track, rngs["imu"], bias_jump)
        return SimFrame(k, t, context, ego, camera, lidar, radar, imu_t, force, rate, track, truth)

    def _ground_truth(self, states: ObjectStates, boxes: Boxes, ego: EgoState) -> list[TruthObject]:
        """Objects within range that the rig has a line of sight to (any of 5 points)."""
        yaw = float(ego.yaw[0])
        c, s = np.cos(yaw), np.sin(yaw)
        rel = states.xy - ego.xy[0]
        candidates = np.flatnonzero(
            states.valid & (np.linalg.norm(rel, axis=1) < GROUND_TRUTH_RANGE_M)
        )
        if len(candidates) == 0:
            return []
        eye = np.r_[
            ego.xy[0] + np.array([[c, -s], [s, c]]) @ self.rig.T_base_lidar[:2, 3],
            self.rig.T_base_lidar[2, 3],
        ]
        offsets = np.array([[0.0, 0.0], [0.35, 0.35], [0.35, -0.35], [-0.35, 0.35], [-0.35, -0.35]])
        targets = []
        for i in candidates:
            length, width, height = states.size[i]
            co, so = np.cos(states.yaw[i]), np.sin(states.yaw[i])
            local = offsets * [length, width]
            xy = (
                states.xy[i]
                + np.c_[co * local[:, 0] - so * local[:, 1], so * local[:, 0] + co * local[:, 1]]
            )
            targets.append(np.c_[xy, np.full(len(offsets), 0.6 * height)])
        targets = np.concatenate(targets)
        ray = targets - eye
        distance = np.linalg.norm(ray, axis=1)
        hit_t, hit_box = first_hits(np.tile(eye, (len(ray), 1)), ray / distance[:, None], boxes)
        owner = np.repeat(candidates, len(offsets))
        hit_owner = np.where(hit_box >= 0, boxes.owner[np.maximum(hit_box, 0)], -9)
        seen = (
            ((hit_owner == owner) | (hit_t >= distance - 0.05))
            .reshape(len(candidates), -1)
            .any(axis=1)
        )
        truth = []
        for i in candidates[seen]:
            bx, by = c * rel[i, 0] + s * rel[i, 1], -s * rel[i, 0] + c * rel[i, 1]
            vx, vy = states.velocity[i]
            rel_yaw = (states.yaw[i] - yaw + np.pi) % (2 * np.pi) - np.pi
            cls = ObjectClass(int(states.object_class[i]))
            length, width, height = states.size[i]
            truth.append(
                TruthObject(
                    track_id=f"{cls.label}_{i}",
                    object_class=cls,
                    box=Box3D(
                        float(bx),
                        float(by),
                        float(height / 2),
                        float(length),
                        float(width),
                        float(height),
                        float(rel_yaw),
                    ),
                    velocity=(float(c * vx + s * vy), float(-s * vx + c * vy)),
                    index=int(i),
                )
            )
        return truth
