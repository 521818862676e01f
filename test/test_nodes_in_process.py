"""The nodes' inputs and outputs in this process, each test with its own context: a frame
the pipeline raises on costs that frame only (each node keeps publishing for the frames
after it and reports the failure), and sensor data that comes before its calibration
waits for it."""

from __future__ import annotations

import os
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

DOMAIN_ID = (int(os.environ["ROS_DOMAIN_ID"]) + 30) % 100
TIMEOUT_S = 30.0


@pytest.fixture
def ros_context():
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    yield context
    rclpy.shutdown(context=context)


def _spin(node, listener, until) -> None:
    """Spin both nodes until ``until()`` or the timeout."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.add_node(listener)
    deadline = time.monotonic() + TIMEOUT_S
    while not until() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown(timeout_sec=0)


def _failing_on(stamp_ns: int, work):
    def failing(frame, *arguments):
        if frame.stamp_ns == stamp_ns:
            raise RuntimeError("injected")
        return work(frame, *arguments)

    return failing


def _listener(context, topic: str, kind, received: list):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    listener = rclpy.create_node("test_failures_listener", context=context)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(kind, topic, received.append, qos)
    return listener


def _status(statuses, name: str):
    return next(s for s in statuses if s.name == name)


def test_fusion_skips_a_frame_the_pipeline_raises_on_and_goes_on(ros_context, clear_frames):
    from rclpy.parameter import Parameter
    from vision_msgs.msg import Detection3DArray

    from dynfusion_ros.ros.fusion_node import FusionNode

    overrides = [Parameter("selection_wait_s", value=0.0), Parameter("max_queued_frames", value=10)]
    node = FusionNode(context=ros_context, parameter_overrides=overrides)
    received: list = []
    listener = _listener(ros_context, "/dynfusion/detections", Detection3DArray, received)
    frames = [labelled.frame for labelled in clear_frames[:3]]
    node.pipeline.execute = _failing_on(frames[0].stamp_ns, node.pipeline.execute)
    try:
        _spin(node, listener, node.detections_pub.get_subscription_count)
        for frame in frames:
            node._on_frame(None, frame)  # as the sensor input hands over an assembled frame
        _spin(node, listener, lambda: len(received) == 2)
        assert [m.header.stamp.nanosec for m in received] == [
            f.stamp_ns % 1_000_000_000 for f in frames[1:]
        ]
        assert node.worker.is_alive()
        output = _status(node._statuses(), "fusion: output")
        assert output.level == DiagnosticStatus.ERROR
        assert {v.key: v.value for v in output.values}["failed: RuntimeError"] == "1"
    finally:
        listener.destroy_node()
        node.destroy_node()
    assert not node.worker.is_alive()  # destroy_node stops the worker before the node


def test_context_estimator_skips_a_frame_the_gate_raises_on_and_goes_on(ros_context, clear_frames):
    from dynfusion_msgs.msg import BranchSelection

    from dynfusion_ros.ros.context_estimator_node import SELECTION_TOPIC, ContextEstimatorNode

    node = ContextEstimatorNode(context=ros_context)
    received: list = []
    listener = _listener(ros_context, SELECTION_TOPIC, BranchSelection, received)
    frames = [labelled.frame for labelled in clear_frames[:3]]
    node.pipeline.choose = _failing_on(frames[1].stamp_ns, node.pipeline.choose)
    try:
        _spin(node, listener, node.publisher.get_subscription_count)
        for frame in frames:
            node._on_frame(None, frame)
        _spin(node, listener, lambda: len(received) == 2)
        assert [m.header.stamp.nanosec for m in received] == [
            frames[0].stamp_ns % 1_000_000_000,
            frames[2].stamp_ns % 1_000_000_000,
        ]
        gate = _status(node._statuses(), "context_estimator: gate")
        assert gate.level == DiagnosticStatus.ERROR
        assert "1 frames failed" in gate.message
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_frames_the_fusion_node_never_assembled_are_counted(ros_context, clear_frames):
    """The context estimator selected frames this node never built (it was stopped,
    or its sensor messages were lost): each selection that never met its frame counts."""
    from rclpy.parameter import Parameter

    from dynfusion_ros.ros.convert.dynfusion import selection_to_msg
    from dynfusion_ros.ros.fusion_node import FusionNode

    overrides = [Parameter("selection_wait_s", value=0.0), Parameter("max_queued_frames", value=10)]
    node = FusionNode(context=ros_context, parameter_overrides=overrides)
    frames = [labelled.frame for labelled in clear_frames[:4]]
    try:
        for frame in frames:
            node._on_selection(selection_to_msg(node.pipeline.choose(frame).selection))
        node._on_frame(None, frames[0])
        node._on_frame(None, frames[3])  # frames 1 and 2 never came
        output = _status(node._statuses(), "fusion: output")
        values = {v.key: v.value for v in output.values}
        assert values["frames_selected_but_never_assembled"] == "2"
        assert output.level == DiagnosticStatus.WARN
        assert "2 frames never assembled" in output.message
    finally:
        node.destroy_node()


def test_a_burst_of_frames_waits_for_its_selections_one_after_another(ros_context, clear_frames):
    """Frames held for a late tf tree come out together; the estimator then chooses them
    in turn, so the last one's selection comes well after it was assembled. Its wait
    counts from when it is next in line: no frame falls back."""
    from rclpy.parameter import Parameter

    from dynfusion_ros.ros.convert.dynfusion import selection_to_msg
    from dynfusion_ros.ros.fusion_node import FusionNode

    wait_s = 0.3
    overrides = [Parameter("selection_wait_s", value=wait_s)]
    node = FusionNode(context=ros_context, parameter_overrides=overrides)
    frames = [labelled.frame for labelled in clear_frames[:3]]
    try:
        selections = [selection_to_msg(node.pipeline.choose(f).selection) for f in frames]
        for frame in frames:  # the burst
            node._on_frame(None, frame)
        for selection in selections:  # each 0.2 s after the last: the third 0.6 s late
            time.sleep(2 * wait_s / 3)
            node._on_selection(selection)
        deadline = time.monotonic() + TIMEOUT_S
        while node.frames < len(frames) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.frames == len(frames)
        assert sum(node.fallbacks.values()) == 0, node.fallbacks
    finally:
        node.destroy_node()


def _bag_messages(bag) -> list[tuple[str, object, int]]:
    """(topic, rclpy message, log time) of a bag, in log order."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.replay import message_class

    with Reader(bag) as reader:
        return [
            (c.topic, deserialize_message(bytes(raw), message_class(c.msgtype)), log_ns)
            for c, log_ns, raw in reader.messages()
        ]


def test_sensor_data_that_comes_before_its_calibration_waits_for_it(ros_context, clear_bag):
    """At start-up the first images and clouds often come before /tf_static and
    CameraInfo; they are held, not dropped, so the first frame has every sensor."""
    import rclpy

    from dynfusion_ros.ros.parameters import declare
    from dynfusion_ros.ros.sensor_input import SensorInput
    from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS

    node = rclpy.create_node("test_early_input", context=ros_context)
    frames = []
    values = declare(node, SENSOR_PARAMS, lambda *_: None)
    sensor_input = SensorInput(node, values, lambda _, frame: frames.append(frame))
    sensors = {topic: modality for modality, topic in sensor_input.topics.items()}
    del sensors["/imu/data"]
    handlers = {"/tf_static": lambda msg: sensor_input._on_transforms("/tf_static", msg)}
    handlers["/camera/camera_info"] = sensor_input._on_camera_info
    messages = _bag_messages(clear_bag)
    calibration = [m for m in messages if m[0] in handlers]
    data = [m for m in messages if m[0] in sensors]
    try:
        first_stamp = data[0][1].header.stamp
        firsts = [m for m in data if m[1].header.stamp == first_stamp]
        assert {topic for topic, _, _ in firsts} >= {"/camera/image_raw", "/radar/points"}
        for topic, msg, log_ns in firsts:  # the first data, before any calibration
            sensor_input.door.admit(sensors[topic], msg, log_ns)
        assert not frames
        for topic, msg, _ in calibration[:2]:
            handlers[topic](msg)
        for topic, msg, log_ns in data[len(firsts) :]:
            sensor_input.door.admit(sensors[topic], msg, log_ns)
        first = frames[0]
        assert first.stamp_ns == first_stamp.sec * 1_000_000_000 + first_stamp.nanosec
        assert first.camera is not None and first.lidar is not None and first.radar is not None
        assert not any(h.dropped for h in sensor_input.sync.health.values())
    finally:
        node.destroy_node()


def test_fusion_publishes_odometry_and_its_transform(ros_context, clear_frames):
    import math

    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter
    from tf2_msgs.msg import TFMessage

    from dynfusion_ros.ros.fusion_node import FusionNode

    overrides = [Parameter("selection_wait_s", value=0.0), Parameter("max_queued_frames", value=20)]
    node = FusionNode(context=ros_context, parameter_overrides=overrides)
    odometry: list = []
    transforms: list = []
    listener = _listener(ros_context, "/dynfusion/odometry", Odometry, odometry)
    listener.create_subscription(TFMessage, "/tf", transforms.append, 50)
    frames = [labelled.frame for labelled in clear_frames]
    try:
        _spin(node, listener, lambda: node.odometry_pub.get_subscription_count() > 0)
        for frame in frames:
            node._on_frame(None, frame)
        _spin(node, listener, lambda: len(odometry) == len(frames) and len(transforms) > 0)
        assert len(odometry) == len(frames)  # the first frame brings IMU samples
        last = odometry[-1]
        assert (last.header.frame_id, last.child_frame_id) == ("odom", "base_link")
        stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in odometry]
        assert stamps == [frame.stamp_ns for frame in frames]
        assert last.pose.pose.position.x == node.pipeline.odometry.filter.estimate().position[0]
        assert all(math.isfinite(v) for m in odometry for v in m.pose.covariance)
        assert last.pose.covariance[0] > 0 and last.twist.covariance[0] > 0
        sent = transforms[-1].transforms[0]
        assert (sent.header.frame_id, sent.child_frame_id) == ("odom", "base_link")
        status = _status(node._statuses(), "fusion: odometry")
        values = {v.key: v.value for v in status.values}
        assert status.level == DiagnosticStatus.OK, status.message
        assert int(values["radar: accepted"]) >= len(frames) - 2
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_a_publisher_of_another_type_on_a_sensor_topic_is_named(ros_context):
    """DDS never matches a CompressedImage publisher with an Image subscription, and says
    nothing: /diagnostics does."""
    import rclpy
    from sensor_msgs.msg import CompressedImage

    from dynfusion_ros.ros.parameters import declare
    from dynfusion_ros.ros.sensor_input import SensorInput
    from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS

    node = rclpy.create_node("test_type_mismatch", context=ros_context)
    elsewhere = rclpy.Context()  # another participant, as another process would be
    rclpy.init(context=elsewhere, domain_id=DOMAIN_ID)
    other = rclpy.create_node("test_compressed_camera", context=elsewhere)
    try:
        sensor_input = SensorInput(node, declare(node, SENSOR_PARAMS, lambda *_: None), print)
        other.create_publisher(CompressedImage, "/camera/image_raw", 1)

        def camera_message() -> str:
            return _status(sensor_input.statuses("test"), "test: camera").message

        deadline = time.monotonic() + TIMEOUT_S
        while "published as" not in camera_message() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert camera_message() == (
            "no message received: /camera/image_raw is published as"
            " sensor_msgs/msg/CompressedImage, this node takes sensor_msgs/msg/Image"
            " (set camera_transport)"
        )
        assert _status(sensor_input.statuses("test"), "test: lidar").message == (
            "no message received"
        )
    finally:
        other.destroy_node()
        rclpy.shutdown(context=elsewhere)
        node.destroy_node()


def test_malformed_calibration_and_unreadable_clouds_are_counted_not_fatal(ros_context):
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
    from tf2_msgs.msg import TFMessage

    from dynfusion_ros.core.types import Modality
    from dynfusion_ros.ros.parameters import declare
    from dynfusion_ros.ros.sensor_input import SensorInput
    from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS

    node = rclpy.create_node("test_bad_calibration", context=ros_context)
    try:
        sensor_input = SensorInput(node, declare(node, SENSOR_PARAMS, lambda *_: None), print)
        sensor_input._on_camera_info(CameraInfo(width=640, height=384))  # K all zero
        lens = CameraInfo(width=640, height=384, k=[400.0, 0, 320, 0, 400, 192, 0, 0, 1])
        lens.distortion_model, lens.d = "equidistant", [0.1]  # OpenCV wants 4
        sensor_input._on_camera_info(lens)
        zero = TransformStamped(child_frame_id="lidar_link")
        zero.header.frame_id, zero.transform.rotation.w = "base_link", 0.0  # zero quaternion
        sensor_input._on_transforms("/tf_static", TFMessage(transforms=[zero]))
        cloud = PointCloud2(height=1, width=10, point_step=2**31, row_step=120, data=bytes(120))
        cloud.fields = [PointField(name="x", offset=0, datatype=7, count=1)]
        sensor_input.door.admit(Modality.LIDAR, cloud, 1)
        statuses = sensor_input.statuses("test")
        calibration = _status(statuses, "test: calibration")
        values = {kv.key: kv.value for kv in calibration.values}
        assert calibration.level == DiagnosticStatus.WARN
        assert values["/camera/camera_info: refused"] == "2"
        assert "equidistant takes 4 coefficients" in values["/camera/camera_info: last_problem"]
        assert values["/tf_static: refused"] == "1"
        assert "zero quaternion" in values["/tf_static: last_problem"]
        lidar = {kv.key: kv.value for kv in _status(statuses, "test: lidar").values}
        assert lidar["dropped: malformed point_step"] == "1"
    finally:
        node.destroy_node()


def test_fusion_state_changes_while_frames_run_are_serialised(ros_context, clear_frames):
    """Budget and policy sets, resets and diagnostics from the executor's side while the
    worker fuses frames: no frame fails, nothing raises, every frame is published."""
    import threading

    from rclpy.parameter import Parameter
    from vision_msgs.msg import Detection3DArray

    from dynfusion_ros.ros.fusion_node import FusionNode

    overrides = [Parameter("selection_wait_s", value=0.0), Parameter("max_queued_frames", value=50)]
    node = FusionNode(context=ros_context, parameter_overrides=overrides)
    received: list = []
    listener = _listener(ros_context, "/dynfusion/detections", Detection3DArray, received)
    frames = [labelled.frame for labelled in clear_frames] * 2
    errors: list = []
    done = threading.Event()

    def meddle() -> None:
        budgets = (0.2, 0.5, 0.35)
        step = 0
        while not done.is_set():
            try:
                node._on_change("energy_budget_j", budgets[step % 3])
                node._on_change("policy", ("dynamic", "full")[step % 2])
                node._on_change("fusion_method", ("wbf", "nms")[step % 2])
                node._statuses()
                if step % 7 == 0:
                    with node.pipeline_lock:
                        node.pipeline.reset()
            except Exception as error:  # any: the test's point
                errors.append(error)
            step += 1

    meddler = threading.Thread(target=meddle)
    try:
        _spin(node, listener, node.detections_pub.get_subscription_count)
        meddler.start()
        for frame in frames:
            node._on_frame(None, frame)
        _spin(node, listener, lambda: len(received) == len(frames))
    finally:
        done.set()
        meddler.join()
        listener.destroy_node()
        node.destroy_node()
    assert not errors and not node.failures, (errors, node.failures.values())
    assert len(received) == len(frames)


def test_the_fusion_node_refuses_budget_and_policy_sets_it_would_not_keep(ros_context):
    """Every selection brings the context estimator's budget and policy: a set on
    /fusion would be overwritten at the next frame, so it is refused, and says where."""
    from rclpy.parameter import Parameter

    from dynfusion_ros.ros.fusion_node import FusionNode

    node = FusionNode(context=ros_context)
    try:
        for name, value in (("energy_budget_j", 0.2), ("policy", "full")):
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and "read-only" in result.reason, result.reason
            descriptor = node.describe_parameter(name)
            assert descriptor.read_only and "/context_estimator" in descriptor.description
        assert node.set_parameters([Parameter("score_threshold", value=0.3)])[0].successful
    finally:
        node.destroy_node()
