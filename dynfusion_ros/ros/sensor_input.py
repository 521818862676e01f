"""The sensor side both nodes share: subscriptions, frame sync, frame building, and the
per-sensor health they report on /diagnostics.

Both nodes assemble the same frames from the same messages with the same settings, so
the fusion node finds the context estimator's selection under the stamp it keyed.
"""

from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, Imu, PointCloud2
from tf2_msgs.msg import TFMessage

from dynfusion_ros.core.types import Modality, SensorFrame
from dynfusion_ros.ros.convert import ConversionError, stamp_ns
from dynfusion_ros.ros.diagnostics import status
from dynfusion_ros.ros.frames import FrameBuilder, assemble
from dynfusion_ros.ros.parameters import Param
from dynfusion_ros.ros.sync import FRAME_SENSORS, FrameSync, SyncedFrame, SyncSettings
from dynfusion_ros.ros.timers import steady_timer

POLL_PERIOD_S = 0.01  # how often waiting frames are checked against their timeout
IMU_QUEUE = 50  # 200-400 Hz: a frame period of samples and then some


def _sensors(value: object) -> str:
    known = [m.value for m in FRAME_SENSORS]
    unknown = [v for v in value if v not in known]
    if unknown or not value:
        return f"needs sensors from {', '.join(known)}; got {list(value)}"
    return ""


def _topic(value: object) -> str:
    return "" if isinstance(value, str) and value.startswith("/") else "must be an absolute topic"


SENSOR_PARAMS = (
    Param(
        "camera_topic",
        "/camera/image_raw",
        "Camera images (sensor_msgs/Image: rgb8, bgr8 or mono8).",
        check=_topic,
    ),
    Param(
        "camera_info_topic",
        "/camera/camera_info",
        "Camera calibration (sensor_msgs/CameraInfo).",
        check=_topic,
    ),
    Param(
        "lidar_topic",
        "/lidar/points",
        "Lidar sweeps (sensor_msgs/PointCloud2 with x, y, z; intensity optional).",
        check=_topic,
    ),
    Param(
        "radar_topic",
        "/radar/points",
        "Radar detections (sensor_msgs/PointCloud2 with x, y, z and "
        "doppler/range_rate/velocity, rcs optional).",
        check=_topic,
    ),
    Param(
        "imu_topic",
        "/imu/data",
        "IMU samples (sensor_msgs/Imu).",
        check=_topic,
    ),
    Param(
        "reference_sensors",
        ["camera", "lidar", "radar"],
        "Sensors whose stamps key frames, in order of preference: the first one not silent"
        " keys them.",
        check=_sensors,
    ),
    Param(
        "frame_period_s",
        0.1,
        "Nominal frame period (s); a reference message closer than half of it to the last"
        " frame keys none.",
        0.01,
        1.0,
    ),
    Param(
        "frame_timeout_s",
        0.15,
        "Longest a frame waits for its other sensors after its reference message arrived "
        "(s); then it goes on without them.",
        0.0,
        2.0,
    ),
    Param(
        "silent_after_s",
        0.3,
        "A sensor not heard for this long (s) is silent: frames do not wait for it and it"
        " keys none.",
        0.01,
        10.0,
    ),
    Param(
        "stamp_tolerance_s",
        0.03,
        "How far after the frame stamp a message may be stamped and still belong to the frame (s).",
        0.0,
        0.5,
    ),
    Param(
        "camera_max_age_s",
        0.12,
        "Oldest camera image a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "lidar_max_age_s",
        0.12,
        "Oldest lidar sweep a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "radar_max_age_s",
        0.1,
        "Oldest radar scan a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "lidar_max_points",
        500_000,
        "Largest lidar cloud used whole; a larger one is thinned to this by taking every"
        " k-th point, and reported.",
        1000,
        100_000_000,
    ),
    Param(
        "radar_max_points",
        10_000,
        "Largest radar scan used whole; a larger one is thinned the same way.",
        10,
        10_000_000,
    ),
    Param(
        "max_stamp_delay_s",
        5.0,
        "Messages stamped further behind the node clock than this are dropped as stale (s).",
        0.1,
        1e6,
    ),
    Param(
        "max_stamp_lead_s",
        0.5,
        "Messages stamped further ahead of the node clock than this are dropped (s).",
        0.0,
        60.0,
    ),
)


def sync_settings(values: dict) -> SyncSettings:
    """The sync settings from the declared SENSOR_PARAMS values."""
    per_sensor = {m: values[f"{m.value}_max_age_s"] for m in FRAME_SENSORS}
    tolerance = values["stamp_tolerance_s"]
    return SyncSettings(
        reference_order=tuple(Modality(v) for v in values["reference_sensors"]),
        frame_period_s=values["frame_period_s"],
        tolerance_s={m: tolerance for m in FRAME_SENSORS},
        max_age_s=per_sensor,
        timeout_s=values["frame_timeout_s"],
        silent_after_s=values["silent_after_s"],
        max_future_s=values["max_stamp_lead_s"],
        max_delay_s=values["max_stamp_delay_s"],
    )


class SensorInput:
    """Subscribes to the sensors and hands ``on_frame`` each assembled frame;
    ``on_time_jump`` hears that time went backwards (state downstream should reset)."""

    def __init__(
        self,
        node: Node,
        values: dict,
        on_frame: Callable[[SyncedFrame, SensorFrame], None],
        *,
        on_time_jump: Callable[[], None] = lambda: None,
    ) -> None:
        self.node, self.on_frame, self.on_time_jump = node, on_frame, on_time_jump
        self.sync = FrameSync(sync_settings(values), on_time_jump=self._time_jumped)
        self.builder = FrameBuilder()
        self.topics = {m: values[f"{m.value}_topic"] for m in (*FRAME_SENSORS, Modality.IMU)}
        self.last_problem: dict[str, str] = {}  # topic -> what was last wrong with it
        self.max_points = {
            m: values[f"{m.value}_max_points"] for m in (Modality.LIDAR, Modality.RADAR)
        }
        # per sensor, the newest message that came before its calibration, and its arrival
        self.early: dict[Modality, tuple[object, int]] = {}
        sensor_qos = qos_profile_sensor_data
        imu_qos = QoSProfile(depth=IMU_QUEUE, reliability=ReliabilityPolicy.BEST_EFFORT)
        for modality, kind in (
            (Modality.CAMERA, Image),
            (Modality.LIDAR, PointCloud2),
            (Modality.RADAR, PointCloud2),
            (Modality.IMU, Imu),
        ):
            node.create_subscription(
                kind,
                self.topics[modality],
                lambda msg, m=modality: self._on_sensor(m, msg),
                imu_qos if modality is Modality.IMU else sensor_qos,
            )
        node.create_subscription(
            CameraInfo, values["camera_info_topic"], self._on_camera_info, sensor_qos
        )
        static = QoSProfile(
            depth=100,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        node.create_subscription(TFMessage, "/tf_static", self._on_tf_static, static)
        self.camera_info_topic = values["camera_info_topic"]
        steady_timer(node, POLL_PERIOD_S, self._poll)

    def _time_jumped(self, warning: str) -> None:
        self.node.get_logger().warning(warning)
        self.on_time_jump()

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def report(self, topic: str, problem: str, *, dropped: bool = True) -> None:
        """Log a problem with a topic once (until it changes) and keep it for diagnostics."""
        if self.last_problem.get(topic) != problem:
            outcome = "message dropped" if dropped else "message used in part"
            self.node.get_logger().warning(f"{topic}: {problem} ({outcome})")
        self.last_problem[topic] = problem

    def _on_camera_info(self, msg) -> None:
        try:
            self.builder.take_camera_info(msg)
        except ConversionError as error:
            self.report(self.camera_info_topic, str(error))
            return
        self._release_early()

    def _on_tf_static(self, msg) -> None:
        try:
            self.builder.take_transforms(msg)
        except ConversionError as error:
            self.report("/tf_static", str(error))
            return
        self._release_early()

    def _missing_calibration(self, modality: Modality) -> str:
        """What a message of this sensor cannot be converted without, yet; "" if nothing."""
        if modality is Modality.CAMERA and self.builder.camera_model is None:
            return f"CameraInfo on {self.camera_info_topic}"
        if modality is not Modality.IMU and not self.builder.extrinsics:
            return "/tf_static"
        return ""

    def _release_early(self) -> None:
        """Hand on, in arrival order, the held messages whose calibration is now here."""
        ready = [m for m in self.early if not self._missing_calibration(m)]
        for modality in sorted(ready, key=lambda m: self.early[m][1]):
            msg, arrived = self.early.pop(modality)
            self._on_sensor(modality, msg, arrived)

    def _on_sensor(self, modality: Modality, msg, arrived_ns: int | None = None) -> None:
        """Convert at the door: a malformed message is dropped before it can key a frame
        or displace a good one. A message that comes before its calibration (the first
        CameraInfo, the first /tf_static: at start-up they often come just after the
        first data) waits for it, the newest one per sensor; the frames of the first
        instants would otherwise go without camera and lidar."""
        now = self.now_ns() if arrived_ns is None else arrived_ns
        missing = self._missing_calibration(modality)
        if missing:
            if modality in self.early:  # still none: the older message is lost
                self.sync.refuse(modality, f"no {missing.split()[0]} received yet")
                self.report(self.topics[modality], f"no {missing} received yet")
            self.early[modality] = (msg, now)
            return
        try:
            stamp = stamp_ns(msg.header)
            data = self.builder.convert(modality, msg)
        except ConversionError as error:
            self.sync.refuse(modality, f"malformed {error.field}")
            self.report(self.topics[modality], str(error))
            return
        limit = self.max_points.get(modality)
        if limit is not None and len(data) > limit:
            self.sync.health[modality].thinned += 1
            problem = f"{len(data)} points, more than {limit}: every k-th used"
            self.report(self.topics[modality], problem, dropped=False)
            data = data.thinned(limit)
        self._emit(self.sync.add(modality, stamp, data, now))

    def _poll(self) -> None:
        self._emit(self.sync.poll(self.now_ns()))

    def _emit(self, frames: list[SyncedFrame]) -> None:
        for synced in frames:
            imu = [sample for _, sample in synced.imu]
            self.on_frame(synced, assemble(synced.stamp_ns, synced.messages, imu))

    def statuses(self, prefix: str) -> list[DiagnosticStatus]:
        """One status per sensor: rate, silence, frames without it, drops by reason."""
        now, out = self.now_ns(), []
        for modality, topic in self.topics.items():
            health = self.sync.health[modality]
            silent = self.sync.silent(modality, now)
            if health.last_arrival_ns is None:
                level, message = DiagnosticStatus.ERROR, "no message received"
            elif silent:
                level = DiagnosticStatus.ERROR
                message = f"silent for {health.silent_s(now):.1f} s"
            elif health.dropped:
                level, message = DiagnosticStatus.WARN, f"{sum(health.dropped.values())} dropped"
            else:
                level, message = DiagnosticStatus.OK, f"{health.rate_hz():.1f} Hz"
            values = {
                "topic": topic,
                "rate_hz": f"{health.rate_hz():.2f}",
                "silent_s": f"{health.silent_s(now):.3f}",
                "received": health.received,
                "frames_with": health.used,
                "frames_without": health.missing_frames,
                "thinned": health.thinned,
                **{f"dropped: {reason}": n for reason, n in sorted(health.dropped.items())},
            }
            if topic in self.last_problem:
                values["last_problem"] = self.last_problem[topic]
            out.append(status(f"{prefix}: {modality.value}", level, message, values))
        return out
