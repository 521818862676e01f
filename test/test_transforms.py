"""The tf tree: chained mounts, /tf beside /tf_static, ROS 1 names, missing links named."""

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage

from dynfusion_ros.core.rotations import quaternion_matrix
from dynfusion_ros.core.transforms import TransformError, TransformTree
from dynfusion_ros.core.types import Modality
from dynfusion_ros.ros.frames import FrameBuilder, SensorDoor
from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS


def _matrix(yaw: float, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(np.array([0, 0, np.sin(yaw / 2), np.cos(yaw / 2)]))
    matrix[:3, 3] = translation
    return matrix


def test_a_chain_composes_in_order_and_siblings_meet_at_their_ancestor():
    tree = TransformTree()
    a, b = _matrix(0.3, (1.0, 0.0, 1.5)), _matrix(np.pi, (0.0, 0.0, 0.04))
    tree.add("base_link", "velodyne_base_link", a)
    tree.add("velodyne_base_link", "velodyne", b)
    tree.add("/base_link", "/radar", _matrix(0.0, (3.7, 0, 0.5)))  # ROS 1 names
    np.testing.assert_allclose(tree.lookup("base_link", "velodyne"), a @ b)
    np.testing.assert_allclose(tree.lookup("/velodyne", "base_link"), np.linalg.inv(a @ b))
    expected = np.linalg.inv(a @ b) @ _matrix(0.0, (3.7, 0, 0.5))
    np.testing.assert_allclose(tree.lookup("velodyne", "radar"), expected, atol=1e-12)


def test_a_missing_link_is_named():
    tree = TransformTree()
    tree.add("base_link", "camera_link", np.eye(4))
    tree.add("camera_color_frame", "camera_color_optical_frame", np.eye(4))
    with pytest.raises(TransformError, match=r"'camera_color_optical_frame'.*'camera_color_frame'"):
        tree.lookup("base_link", "camera_color_optical_frame")
    with pytest.raises(TransformError, match="in no transform received"):
        tree.lookup("base_link", "imu_link")
    tree.add("camera_color_frame", "camera_link", np.eye(4))  # a loop, not a hang
    tree.add("camera_link", "camera_color_frame", np.eye(4))
    with pytest.raises(TransformError, match="loops"):
        tree.lookup("base_link", "camera_color_optical_frame")


def _tf(parent: str, child: str, x: float) -> TransformStamped:
    transform = TransformStamped()
    transform.header.frame_id, transform.child_frame_id = parent, child
    transform.transform.translation.x = x
    transform.transform.rotation.w = 1.0
    return transform


def test_builder_skips_world_frames_and_refuses_a_bad_transform_keeping_the_rest():
    builder = FrameBuilder()
    bad = _tf("base_link", "radar_link", 1.0)
    bad.transform.rotation.w = 0.0  # a zero quaternion
    message = TFMessage(
        transforms=[_tf("odom", "base_link", 5.0), _tf("base_link", "lidar_link", 1.2), bad]
    )
    with pytest.raises(ValueError, match=r"radar_link.*zero quaternion"):
        builder.take_transforms(message)
    assert builder.mount("lidar_link")[0, 3] == 1.2
    assert "odom" not in builder.tree.frames()  # our own odometry on /tf is no mount


def test_imu_samples_wait_for_their_mount_then_arrive_turned_in_order():
    from sensor_msgs.msg import Imu

    from dynfusion_ros.ros.convert import header_msg

    ready, refused = [], []
    door = SensorDoor(
        FrameBuilder(),
        {**SENSOR_DEFAULTS, "calibration_hold_s": 0.05},
        lambda modality, data, arrived: ready.append((arrived, data)),
        lambda modality, refusal: refused.append(refusal),
        lambda modality, text: None,
    )
    for number in range(20):  # 100 ms at 200 Hz, the first 10 held too long
        msg = Imu(header=header_msg(number * 5_000_000, "imu_link"))
        msg.linear_acceleration.z = -9.81  # mounted upside down
        door.admit(Modality.IMU, msg, number * 5_000_000)
    assert not ready and len(refused) == 9
    assert refused[0].reason == "no transform to the base frame"  # a kind: a counter's key
    assert "no transform from 'base_link' to 'imu_link'" in refused[0].detail
    flipped = _tf("base_link", "imu_link", 0.0)
    flipped.transform.rotation.x, flipped.transform.rotation.w = 1.0, 0.0  # 180 deg about x
    door.take_transforms(TFMessage(transforms=[flipped]))
    assert [arrived for arrived, _ in ready] == [n * 5_000_000 for n in range(9, 20)]
    assert all(data.linear_acceleration[2] == pytest.approx(9.81) for _, data in ready)


def test_held_messages_are_tried_again_only_when_the_calibration_changed():
    from sensor_msgs.msg import Imu

    from dynfusion_ros.ros.convert import header_msg

    builder = FrameBuilder()
    door = SensorDoor(builder, SENSOR_DEFAULTS, lambda *_: None, lambda *_: None, lambda *_: None)
    for number in range(50):
        door.admit(Modality.IMU, Imu(header=header_msg(number, "imu_link")), number)
    tried = []
    convert = builder.convert
    builder.convert = lambda modality, msg: tried.append(msg) or convert(modality, msg)
    unrelated = TFMessage(transforms=[_tf("base_link", "radar_link", 3.7)])
    door.take_transforms(unrelated)  # a new edge: all 50 are tried, and held again
    for _ in range(20):  # /tf repeating it changes nothing: none is tried again
        door.take_transforms(unrelated)
    assert len(tried) == 50
    door.take_transforms(TFMessage(transforms=[_tf("base_link", "imu_link", 0.0)]))
    assert len(tried) == 100 and not door.early


def test_a_camera_resending_one_image_is_refused_as_frozen_after_a_few():
    from dynfusion_ros.core.types import CameraModel
    from dynfusion_ros.ros.convert import array_to_image, model_to_camera_info
    from dynfusion_ros.ros.frames import FROZEN, FROZEN_AFTER

    ready, refused = [], []
    door = SensorDoor(
        FrameBuilder(),
        SENSOR_DEFAULTS,
        lambda modality, data, arrived: ready.append(arrived),
        lambda modality, refusal: refused.append((arrived, refusal)),
        lambda modality, text: None,
    )
    model = CameraModel(32, 24, [[30, 0, 16], [0, 30, 12], [0, 0, 1]], frame_id="camera_link")
    door.take_camera_info(model_to_camera_info(model, 0))
    door.take_transforms(TFMessage(transforms=[_tf("base_link", "camera_link", 1.0)]))
    rng = np.random.default_rng(3)
    still = rng.integers(0, 255, (24, 32, 3), np.uint8)
    for arrived in range(12):  # 3 live images, then the driver sticks, then it recovers
        pixels = still if 3 <= arrived < 10 else rng.integers(0, 255, (24, 32, 3), np.uint8)
        image = array_to_image(pixels, "rgb8", arrived, "camera_link")
        door.admit(Modality.CAMERA, image, arrived)
    stuck_from = 3 + FROZEN_AFTER - 1  # the FROZEN_AFTER-th identical image is the first refused
    assert ready == [*range(stuck_from), 10, 11]
    assert [arrived for arrived, _ in refused] == list(range(stuck_from, 10))
    assert all(refusal.reason == FROZEN for _, refusal in refused)
    assert "5 identical images in a row" in refused[0][1].detail
