"""Our interface packages: wire compatibility with upstream vision_msgs, and real DDS
transport of Detection3DArray and BranchSelection between two processes."""

import subprocess
import sys
import textwrap
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from upstream_hashes import UPSTREAM_HASHES

from dynfusion_ros.resources import installed_type_hash


@pytest.mark.parametrize(("msgtype", "expected"), sorted(UPSTREAM_HASHES.items()))
def test_installed_vision_msgs_hashes_equal_upstream(msgtype, expected):
    package, _, name = msgtype.split("/")
    assert installed_type_hash(package, name) == expected


def test_our_messages_are_installed_with_type_descriptions():
    for name in ("BranchSelection", "EnergyReport", "ScenarioContext"):
        assert installed_type_hash("dynfusion_msgs", name).startswith("RIHS01_")


def test_tf_message_hash_equals_the_standard_one():
    """Our fallback tf2_msgs (or the environment's) carries upstream's TFMessage."""
    from rosbags.typesys import Stores, get_typestore

    expected = get_typestore(Stores.ROS2_JAZZY).hash_rihs01("tf2_msgs/msg/TFMessage")
    assert installed_type_hash("tf2_msgs", "TFMessage") == expected


PUBLISHER = textwrap.dedent(
    """
    import time, rclpy
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile
    from dynfusion_ros.core.types import Box3D, Detection, Modality, ObjectClass, Selection
    from dynfusion_ros.ros.convert import detections_to_array, selection_to_msg
    from dynfusion_msgs.msg import BranchSelection
    from vision_msgs.msg import Detection3DArray

    rclpy.init()
    node = rclpy.create_node("interface_test_publisher")
    qos = QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    detections = node.create_publisher(Detection3DArray, "/dynfusion/detections", qos)
    selections = node.create_publisher(BranchSelection, "/dynfusion/selection", qos)
    stamp = 1_700_000_000_250_000_000
    box = Box3D(21.0, -1.5, 0.8, 4.6, 1.9, 1.5, 0.25)
    detections.publish(detections_to_array([Detection(ObjectClass.CAR, 0.87, box)], stamp))
    selections.publish(selection_to_msg(Selection(
        stamp_ns=stamp, policy="dynamic", branch_names=("camera", "lidar", "radar"),
        chosen=(False, True, True), predicted_utility=(0.1, 0.8, 0.5), selection_utility=0.82,
        predicted_energy_j=1.25, budget_j=1.5, context_label="fog",
        context_scores={"fog": 0.9}, sensor_available={Modality.CAMERA: False})))
    deadline = time.monotonic() + 30
    while rclpy.ok() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_detections_and_selection_cross_processes_over_dds():
    from dynfusion_msgs.msg import BranchSelection
    from vision_msgs.msg import Detection3DArray

    from dynfusion_ros.ros.convert import detection_array_to_detections, msg_to_selection

    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER])
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("interface_test_subscriber", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received = {}
        qos = QoSProfile(
            depth=5,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
            reliability=QoSReliabilityPolicy.RELIABLE,
        )
        node.create_subscription(
            Detection3DArray,
            "/dynfusion/detections",
            lambda m: received.setdefault("detections", m),
            qos,
        )
        node.create_subscription(
            BranchSelection,
            "/dynfusion/selection",
            lambda m: received.setdefault("selection", m),
            qos,
        )
        deadline = time.monotonic() + 40
        while len(received) < 2 and time.monotonic() < deadline:
            assert publisher.poll() is None, "publisher process exited early"
            executor.spin_once(timeout_sec=0.1)
        assert set(received) == {"detections", "selection"}, f"received only {set(received)}"

        (detection,) = detection_array_to_detections(received["detections"])
        assert detection.box.x == pytest.approx(21.0) and detection.score == pytest.approx(0.87)
        selection = msg_to_selection(received["selection"])
        assert selection.chosen_branches == ("lidar", "radar")
        assert selection.stamp_ns == 1_700_000_000_250_000_000

        # the endpoint can be discovered before the graph learns its node's name
        (endpoint,) = node.get_publishers_info_by_topic("/dynfusion/detections")
        while endpoint.node_name == "_NODE_NAME_UNKNOWN_" and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            (endpoint,) = node.get_publishers_info_by_topic("/dynfusion/detections")
        assert endpoint.node_name == "interface_test_publisher"
        wire_hash = (
            f"RIHS0{endpoint.topic_type_hash.version}_{endpoint.topic_type_hash.value.hex()}"
        )
        assert wire_hash == UPSTREAM_HASHES["vision_msgs/msg/Detection3DArray"]
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        rclpy.shutdown(context=context)
