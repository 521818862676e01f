"""Write a simulated drive as a rosbag2 (mcap or sqlite3) with ground truth.

Messages are built with rclpy message classes and the package's own converters (the
same code the nodes use to read them back), serialized by rclpy, and stored in log-time
order, where log time is the sensor time plus a plausible driver latency. Delivery
faults (a silent topic, jittered header stamps) act here, on what is recorded, exactly as
they would on a real vehicle's recording. The bag is written to a hidden folder beside
the target and renamed into place only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import heapq
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dynfusion_msgs.msg import ScenarioContext
from geometry_msgs.msg import Transform, TransformStamped
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.metadata import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from tf2_msgs.msg import TFMessage
from tqdm import tqdm

from dynfusion_ros import __version__
from dynfusion_ros.core.rotations import matrix_quaternion, yaw_quaternion
from dynfusion_ros.core.types import Detection, ImuSample, OdometryEstimate
from dynfusion_ros.ros.convert.detections import detections_to_array
from dynfusion_ros.ros.convert.geometry import quaternion_msg, vector3_msg
from dynfusion_ros.ros.convert.image import array_to_image, model_to_camera_info
from dynfusion_ros.ros.convert.imu import sample_to_imu
from dynfusion_ros.ros.convert.odometry import estimate_to_odometry
from dynfusion_ros.ros.convert.pointcloud import array_to_pointcloud2
from dynfusion_ros.ros.convert.stamps import header_msg
from dynfusion_ros.ros.typestore import bag_typestore
from dynfusion_ros.sim.drive import START_NS, SimFrame, Simulation

TOPICS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/lidar/points": "sensor_msgs/msg/PointCloud2",
    "/radar/points": "sensor_msgs/msg/PointCloud2",
    "/imu/data": "sensor_msgs/msg/Imu",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/ground_truth/objects": "vision_msgs/msg/Detection3DArray",
    "/ground_truth/odometry": "nav_msgs/msg/Odometry",
    "/scenario/context": "dynfusion_msgs/msg/ScenarioContext",
}
LATENCY_S = {
    "/camera/image_raw": 0.025,
    "/camera/camera_info": 0.025,
    "/radar/points": 0.015,
    "/imu/data": 0.001,
}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def _latched() -> Qos:
    never = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return Qos(
        QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
        never, never, QosLiveliness.AUTOMATIC, never, False,
    )  # fmt: skip


@dataclass(frozen=True)
class BagSummary:
    path: Path
    frames: int
    messages: dict[str, int]
    size_bytes: int
    duration_s: float
    wall_s: float


def _ns(t_s: float) -> int:
    return SimFrame.stamp_ns(t_s)


class _OrderedBag:
    """Buffers messages and writes them in log-time order (sensors report late)."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.store = store = bag_typestore()
        self.connections = {
            topic: writer.add_connection(
                topic,
                msgtype,
                typestore=store,
                offered_qos_profiles=[_latched()] if topic == "/tf_static" else [],
            )
            for topic, msgtype in TOPICS.items()
        }
        self.pending: list[tuple[int, int, str, bytes]] = []
        self.sequence = 0
        self.counts: Counter[str] = Counter()

    def add(self, log_ns: int, topic: str, msg) -> None:
        # rclpy's serializer leaves alignment padding uninitialised; a round trip through
        # rosbags' serializer zeroes it, so the same drive gives the same bytes
        msgtype = TOPICS[topic]
        data = self.store.serialize_cdr(
            self.store.deserialize_cdr(serialize_message(msg), msgtype), msgtype
        )
        heapq.heappush(self.pending, (log_ns, self.sequence, topic, bytes(data)))
        self.sequence += 1

    def flush(self, before_ns: int | None = None) -> None:
        while self.pending and (before_ns is None or self.pending[0][0] < before_ns):
            log_ns, _, topic, data = heapq.heappop(self.pending)
            self.writer.write(self.connections[topic], log_ns, data)
            self.counts[topic] += 1


class DriveRecorder:
    """Turns simulated frames into messages on the DESIGN.md topics."""

    def __init__(self, sim: Simulation, bag: _OrderedBag) -> None:
        self.sim, self.bag = sim, bag
        self.rng = sim.rngs["delivery"]
        self.frames = sim.rig.frame_ids
        self.camera_model = sim.rig.camera

    def static_transforms(self) -> None:
        msg = TFMessage()
        for sensor, T in self.sim.rig.extrinsics().items():
            msg.transforms.append(
                TransformStamped(
                    header=header_msg(START_NS, self.frames["base"]),
                    child_frame_id=self.frames[sensor],
                    transform=Transform(
                        translation=vector3_msg(T[:3, 3]),
                        rotation=quaternion_msg(matrix_quaternion(T[:3, :3])),
                    ),
                )
            )
        self.bag.add(START_NS, "/tf_static", msg)

    def _sensor(self, frame: SimFrame, topic: str, t_s: float, log_t_s: float, build) -> None:
        """Record a sensor message unless its topic is silent; jitter its stamp if asked."""
        if frame.context.silent(topic) or (
            topic == "/camera/camera_info" and frame.context.silent("/camera/image_raw")
        ):
            return
        stamp_s = t_s
        jitter = frame.context.fault("timestamp_jitter")
        if jitter is not None:
            stamp_s += self.rng.normal(0.0, float(jitter.params.get("sigma_s", 0.01)))
        self.bag.add(_ns(log_t_s), topic, build(_ns(stamp_s)))

    def record(self, frame: SimFrame) -> None:
        t = frame.t_s
        cam_latency = LATENCY_S["/camera/image_raw"]
        self._sensor(
            frame,
            "/camera/image_raw",
            t,
            t + cam_latency,
            lambda ns: array_to_image(frame.camera.image, "rgb8", ns, self.frames["camera"]),
        )
        self._sensor(
            frame,
            "/camera/camera_info",
            t,
            t + cam_latency,
            lambda ns: model_to_camera_info(self.camera_model, ns),
        )
        sweep = frame.lidar
        self._sensor(
            frame,
            "/lidar/points",
            sweep.stamp_s,
            sweep.stamp_s + self.sim.lidar.period + 0.005,
            lambda ns: array_to_pointcloud2(sweep.points, ns, self.frames["lidar"]),
        )
        for t_radar, scan in frame.radar:
            self._sensor(
                frame,
                "/radar/points",
                t_radar,
                t_radar + LATENCY_S["/radar/points"],
                lambda ns, scan=scan: array_to_pointcloud2(scan.points, ns, self.frames["radar"]),
            )
        sigma_a, sigma_g = self.sim.imu.accel_sigma, self.sim.imu.gyro_sigma
        accel_cov, gyro_cov = (
            np.eye(3) * max(sigma_a, 1e-6) ** 2,
            np.eye(3) * max(sigma_g, 1e-8) ** 2,
        )
        for t_imu, force, rate in zip(frame.imu_t_s, frame.imu_force, frame.imu_rate, strict=True):
            self._sensor(
                frame, "/imu/data", float(t_imu), float(t_imu) + LATENCY_S["/imu/data"],
                lambda ns, force=force, rate=rate: sample_to_imu(
                    ImuSample(ns, rate, force, angular_velocity_covariance=gyro_cov,
                              linear_acceleration_covariance=accel_cov, frame_id=self.frames["imu"])
                ),
            )  # fmt: skip
        self._truth(frame)

    def _truth(self, frame: SimFrame) -> None:
        for t_s, objects in frame.truth:
            ns = _ns(t_s)
            detections = [Detection(o.object_class, 1.0, o.box, o.velocity) for o in objects]
            array = detections_to_array(detections, ns, self.frames["base"])
            for detection, obj in zip(array.detections, objects, strict=True):
                detection.id = obj.track_id
            self.bag.add(ns, "/ground_truth/objects", array)
        track = frame.ego_track
        for i, t_s in enumerate(track.t):
            ns = _ns(float(t_s))
            estimate = OdometryEstimate(
                stamp_ns=ns,
                position=np.r_[track.xy[i], 0.0],
                orientation=yaw_quaternion(float(track.yaw[i])),
                linear_velocity=np.array([float(track.speed[i]), 0.0, 0.0]),
                angular_velocity=np.array([0.0, 0.0, float(track.yaw_rate[i])]),
                frame_id="odom",
                child_frame_id=self.frames["base"],
            )
            self.bag.add(ns, "/ground_truth/odometry", estimate_to_odometry(estimate))
        ns = _ns(frame.t_s)
        parameters = frame.context.conditions.as_mapping()
        self.bag.add(
            ns,
            "/scenario/context",
            ScenarioContext(
                header=header_msg(ns, self.frames["base"]),
                scenario=self.sim.scenario.name,
                context=frame.context.label,
                parameter_names=list(parameters),
                parameter_values=list(parameters.values()),
                faults=[f.label for f in frame.context.faults],
            ),
        )


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output we must not or cannot write, before any work is done."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a bag folder; not replacing it")
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not _writable(probe):
        raise PermissionError(f"cannot write into {probe}")


def _writable(folder: Path) -> bool:
    try:
        with open(folder / f".dynfusion-write-test-{time.time_ns()}", "wb") as handle:
            Path(handle.name).unlink()
        return True
    except OSError:
        return False


def write_drive(
    sim: Simulation,
    out: Path,
    *,
    storage: str = "mcap",
    overwrite: bool = False,
    progress: bool = True,
    on_frame: Callable[[SimFrame], None] | None = None,
) -> BagSummary:
    """Simulate every frame of ``sim`` into a rosbag2 folder at ``out``; ``on_frame``
    sees each frame after it is recorded (previews)."""
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; use one of {', '.join(STORAGES)}")
    out = Path(out)
    check_output(out, overwrite)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    partial = out.resolve().parent / f".{out.name}.partial-{time.time_ns()}"
    started = time.perf_counter()
    period_s = 1.0 / sim.rig.camera_rate_hz
    try:
        partial.mkdir()
        writer = Writer(partial / out.name, version=9, storage_plugin=STORAGES[storage])
        writer.set_custom_data("dynfusion.simulator", f"dynfusion_ros {__version__}")
        writer.set_custom_data("dynfusion.scenario", sim.scenario.name)
        writer.set_custom_data("dynfusion.seed", str(sim.seed))
        writer.set_custom_data("dynfusion.duration_s", f"{sim.duration_s:g}")
        writer.open()
        bag = _OrderedBag(writer)
        recorder = DriveRecorder(sim, bag)
        recorder.static_transforms()
        frames = tqdm(
            sim.frames(),
            total=sim.frame_count,
            unit="frame",
            desc=f"simulate {sim.scenario.name}",
            disable=not progress,
        )
        for frame in frames:
            recorder.record(frame)
            if on_frame is not None:
                on_frame(frame)
            bag.flush(before_ns=_ns(frame.t_s + period_s))  # later frames log later
        bag.flush()
        writer.close()
        if out.exists():
            shutil.rmtree(out)
        (partial / out.name).rename(out)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return BagSummary(
        out, sim.frame_count, dict(bag.counts), size, sim.duration_s, time.perf_counter() - started
    )
