"""The sensor side both nodes share: subscriptions into the frame assembly
(``assembly.FrameAssembly``, which the offline tools run on bag log times), and the
per-sensor health they report on /diagnostics.

Both nodes assemble the same frames from the same messages with the same settings, so
the fusion node finds the context estimator's selection under the stamp it keyed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, PointCloud2
from tf2_msgs.msg import TFMessage

from dynfusion_ros.core.types import Modality, SensorFrame
from dynfusion_ros.ros.assembly import POLL_PERIOD_S, FrameAssembly
from dynfusion_ros.ros.convert import ConversionError
from dynfusion_ros.ros.diagnostics import status
from dynfusion_ros.ros.sensor_params import compressed_camera
from dynfusion_ros.ros.sync import FRAME_SENSORS, SyncedFrame
from dynfusion_ros.ros.timers import steady_timer

IMU_QUEUE = 50  # 200-400 Hz: a frame period of samples and then some
NOTES_KEPT = 8  # per topic, on /diagnostics
REPORT_EVERY_S = 10.0  # one log line per topic and kind of problem, at most


def _radar_type(values: dict) -> type:
    if values["radar_message"] == "radar_scan":
        from radar_msgs.msg import RadarScan  # checked by the parameter

        return RadarScan
    return PointCloud2


def _type_name(kind: type) -> str:
    """``pkg/msg/Name`` of an rclpy message class, as the ROS graph names types."""
    return f"{kind.__module__.split('.')[0]}/msg/{kind.__name__}"


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
        self.node, self.on_time_jump = node, on_time_jump
        # resolved in the node's namespace: what the graph and /diagnostics call them
        self.topics = {
            m: node.resolve_topic_name(values[f"{m.value}_topic"])
            for m in (*FRAME_SENSORS, Modality.IMU)
        }
        self.last_problem: dict[str, str] = {}  # topic -> what was last wrong with it
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # when, how many since
        self.notes: dict[str, list[str]] = {}  # topic -> what was used in part, or concluded
        self.types: dict[Modality, str] = {}  # the message type taken on each topic
        self.calibration: Counter[str] = Counter()  # CameraInfo and tf messages, per topic
        self.calibration_refused: Counter[str] = Counter()
        self.assembly = FrameAssembly(
            values,
            self.now_ns,
            on_frame,
            on_refused=lambda sensor, kind, detail: self.report(self.topics[sensor], detail, kind),
            note=self._note,
            on_time_jump=self._time_jumped,
        )
        self.sync, self.door = self.assembly.sync, self.assembly.door
        self.builder = self.assembly.builder
        sensor_qos = qos_profile_sensor_data
        imu_qos = QoSProfile(depth=IMU_QUEUE, reliability=ReliabilityPolicy.BEST_EFFORT)
        camera_type = CompressedImage if compressed_camera(values) else Image
        for modality, kind in (
            (Modality.CAMERA, camera_type),
            (Modality.LIDAR, PointCloud2),
            (Modality.RADAR, _radar_type(values)),
            (Modality.IMU, Imu),
        ):
            self.types[modality] = _type_name(kind)
            node.create_subscription(
                kind,
                self.topics[modality],
                lambda msg, m=modality: self.assembly.admit(m, msg),
                imu_qos if modality is Modality.IMU else sensor_qos,
            )
        self.camera_info_topic = node.resolve_topic_name(values["camera_info_topic"])
        node.create_subscription(
            CameraInfo, self.camera_info_topic, self._on_camera_info, sensor_qos
        )
        static = QoSProfile(
            depth=100,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        dynamic = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, qos in (("/tf_static", static), ("/tf", dynamic)):
            node.create_subscription(
                TFMessage, topic, lambda msg, t=topic: self._on_transforms(t, msg), qos
            )
        steady_timer(node, POLL_PERIOD_S, self.assembly.poll)

    def _time_jumped(self, warning: str) -> None:
        self.node.get_logger().warning(warning)
        self.on_time_jump()

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def report(self, topic: str, problem: str, kind: str, *, dropped: bool = True) -> None:
        """Keep a problem with a topic for diagnostics, and log it: the first of its kind
        at once, then at most one per kind per ``REPORT_EVERY_S`` with the count of those
        not logged (a stream of bad messages must not flood the log)."""
        self.last_problem[topic] = problem
        now = time.monotonic()
        logged_at, unlogged = self._logged.get((topic, kind), (-REPORT_EVERY_S, 0))
        if now - logged_at < REPORT_EVERY_S:
            self._logged[topic, kind] = (logged_at, unlogged + 1)
            return
        self._logged[topic, kind] = (now, 0)
        outcome = "message dropped" if dropped else "message used in part"
        more = f"; {unlogged} more of this kind since the last line" if unlogged else ""
        self.node.get_logger().warning(f"{topic}: {problem} ({outcome}{more})")

    def _note(self, modality: Modality, text: str) -> None:
        """What a topic's messages were read as, or used without: logged once each."""
        topic = self.topics[modality]
        kept = self.notes.setdefault(topic, [])
        if text not in kept and len(kept) < NOTES_KEPT:
            kept.append(text)
            self.node.get_logger().info(f"{topic}: {text}")

    def _on_camera_info(self, msg) -> None:
        self.calibration[self.camera_info_topic] += 1
        try:
            self.assembly.take_camera_info(msg)
        except ConversionError as error:
            self.calibration_refused[self.camera_info_topic] += 1
            self.report(self.camera_info_topic, str(error), error.kind)

    def _on_transforms(self, topic: str, msg) -> None:
        self.calibration[topic] += 1
        try:
            self.assembly.take_transforms(msg)
        except ConversionError as error:
            self.calibration_refused[topic] += 1
            self.report(topic, str(error), error.kind, dropped=False)

    def _calibration_status(self, prefix: str) -> DiagnosticStatus:
        """CameraInfo and the tf tree: received, refused (and why), what is known."""
        refused = sum(self.calibration_refused.values())
        level, message = DiagnosticStatus.OK, f"{len(self.builder.tree)} transforms known"
        if self.builder.camera_model is None:
            level, message = DiagnosticStatus.WARN, f"no CameraInfo yet on {self.camera_info_topic}"
        if refused:
            level = DiagnosticStatus.WARN
            message = f"{refused} calibration messages refused (see last_problem)"
        values = {"base_frame": self.builder.base_frame, "transforms": len(self.builder.tree)}
        for topic in (self.camera_info_topic, "/tf_static", "/tf"):
            values[f"{topic}: received"] = self.calibration[topic]
            values[f"{topic}: refused"] = self.calibration_refused[topic]
            if topic in self.last_problem:
                values[f"{topic}: last_problem"] = self.last_problem[topic]
        return status(f"{prefix}: calibration", level, message, values)

    def _sync_status(self, prefix: str) -> DiagnosticStatus:
        """The frame clock: frames assembled, and how often the clock went back."""
        sync = self.sync
        level, message = DiagnosticStatus.OK, f"{sync.frames_out} frames assembled"
        if sync.time_jumps:
            level = DiagnosticStatus.WARN
            message = f"the clock jumped back {sync.time_jumps} times: frames and odometry reset"
        values = {
            "frames_assembled": sync.frames_out,
            "time_jumps": sync.time_jumps,
            "held_ahead_of_clock": sync.held(),
        }
        return status(f"{prefix}: sync", level, message, values)

    def _why_nothing(self, modality: Modality) -> str:
        """ "no message received", and why when the graph tells: a publisher of another
        type on the topic (DDS never matches it, and says nothing)."""
        topic, wanted = self.topics[modality], self.types[modality]
        offered = {info.topic_type for info in self.node.get_publishers_info_by_topic(topic)} - {
            wanted
        }
        if not offered:
            return "no message received"
        hint = " (set camera_transport)" if modality is Modality.CAMERA else ""
        return (
            f"no message received: {topic} is published as {', '.join(sorted(offered))},"
            f" this node takes {wanted}{hint}"
        )

    def statuses(self, prefix: str) -> list[DiagnosticStatus]:
        """One status per sensor (rate, silence, frames without it, drops by reason), one
        for the calibration (CameraInfo, the tf tree) and one for the frame clock."""
        now, out = self.now_ns(), []
        for modality, topic in self.topics.items():
            health = self.sync.health[modality]
            silent = self.sync.silent(modality, now)
            if health.last_arrival_ns is None and health.received:
                level = DiagnosticStatus.ERROR
                message = f"{health.received} received, none usable: {self.last_problem.get(topic)}"
            elif health.last_arrival_ns is None:
                level, message = DiagnosticStatus.ERROR, self._why_nothing(modality)
            elif silent:
                level = DiagnosticStatus.ERROR
                message = f"silent for {health.silent_s(now):.1f} s"
                if topic in self.last_problem:  # a stream refused, not one that stopped
                    message += f" (last refused: {self.last_problem[topic]})"
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
                "thinned": self.door.thinned.get(modality, 0),
                **{f"dropped: {reason}": n for reason, n in sorted(health.dropped.items())},
            }
            if topic in self.last_problem:
                values["last_problem"] = self.last_problem[topic]
            if topic in self.notes:
                values["read_as"] = "; ".join(self.notes[topic])
            out.append(status(f"{prefix}: {modality.value}", level, message, values))
        out.append(self._calibration_status(prefix))
        out.append(self._sync_status(prefix))
        return out
