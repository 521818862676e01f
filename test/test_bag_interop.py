"""The same readers serve rclpy messages and rosbag2 files read with rosbags: what a node
publishes, a bag records, and the evaluator reads back, means the same thing."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from upstream_hashes import UPSTREAM_HASHES
from vision_msgs.msg import Detection3DArray

from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
from dynfusion_ros.ros.convert import (
    array_to_image,
    columns_to_pointcloud2,
    detection_array_to_detections,
    detections_to_array,
    image_to_array,
    pointcloud2_to_radar_scan,
)
from dynfusion_ros.ros.typestore import bag_typestore


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_messages_written_by_rclpy_read_back_through_a_bag(tmp_path, storage):
    store = bag_typestore()
    radar = columns_to_pointcloud2(
        {
            "x": np.array([10.0, 30.0], np.float32),
            "y": np.array([1.0, -2.0], np.float32),
            "z": np.zeros(2, np.float32),
            "range_rate": np.array([-4.0, 2.5], np.float32),
        },
        1_000_000_000,
        "radar",
    )
    image = array_to_image(
        np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "bgr8", 1_000_000_000, "camera"
    )
    detections = detections_to_array(
        [Detection(ObjectClass.CAR, 0.8, Box3D(15.0, 2.0, 0.8, 4.4, 1.8, 1.5, 0.1))], 1_000_000_000
    )
    topics = {
        "/radar/points": ("sensor_msgs/msg/PointCloud2", radar),
        "/camera/image_raw": ("sensor_msgs/msg/Image", image),
        "/dynfusion/detections": ("vision_msgs/msg/Detection3DArray", detections),
    }
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        for topic, (msgtype, msg) in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connection, 1_000_000_000, serialize_message(msg))

    read = {}
    with Reader(path) as reader:
        for connection, _, raw in reader.messages():
            read[connection.topic] = store.deserialize_cdr(raw, connection.msgtype)
    assert pointcloud2_to_radar_scan(read["/radar/points"]).fields["doppler"].tolist() == [
        -4.0,
        2.5,
    ]
    np.testing.assert_array_equal(
        image_to_array(read["/camera/image_raw"]), np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    )
    (detection,) = detection_array_to_detections(read["/dynfusion/detections"])
    assert detection.object_class is ObjectClass.CAR
    assert detection.box.x == pytest.approx(15.0) and detection.box.yaw == pytest.approx(0.1)


def test_rosbags_serialized_detections_deserialize_in_rclpy():
    store = bag_typestore()
    original = detections_to_array(
        [Detection(ObjectClass.PEDESTRIAN, 0.6, Box3D(5.0, 1.0, 0.9, 0.6, 0.6, 1.8, 0.0))], 42
    )
    via_rosbags = store.serialize_cdr(
        store.deserialize_cdr(serialize_message(original), "vision_msgs/msg/Detection3DArray"),
        "vision_msgs/msg/Detection3DArray",
    )
    received = deserialize_message(bytes(via_rosbags), Detection3DArray)
    assert detection_array_to_detections(received) == detection_array_to_detections(original)


@pytest.mark.parametrize(("msgtype", "expected"), sorted(UPSTREAM_HASHES.items()))
def test_bag_type_store_hashes_equal_upstream(msgtype, expected):
    assert bag_typestore().hash_rihs01(msgtype) == expected
