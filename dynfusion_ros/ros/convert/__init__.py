"""Message conversions between ROS 2 messages and the core's numpy types.

Readers (``*_to_*`` taking a message) only read attributes, so they accept rclpy messages
and messages deserialised by ``rosbags`` alike: the nodes and the bag evaluator share
them. Writers build rclpy messages. Every failure is a :class:`ConversionError` naming
the field and the problem.
"""

from dynfusion_ros.ros.convert.detections import (
    detection_array_to_detections,
    detections_to_array,
    label_info,
    label_info_to_names,
)
from dynfusion_ros.ros.convert.dynfusion import (
    energy_record_to_msg,
    msg_to_energy_record,
    msg_to_selection,
    selection_to_msg,
)
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.image import (
    array_to_image,
    camera_info_to_model,
    compressed_to_camera_image,
    image_to_array,
    image_to_camera_image,
    model_to_camera_info,
    to_rgb8,
)
from dynfusion_ros.ros.convert.imu import imu_to_sample, sample_to_imu
from dynfusion_ros.ros.convert.lidar import LidarLayout, LidarReader, pointcloud2_to_lidar_scan
from dynfusion_ros.ros.convert.odometry import (
    estimate_to_odometry,
    estimate_to_transform,
    odometry_to_estimate,
)
from dynfusion_ros.ros.convert.pointcloud import (
    array_to_pointcloud2,
    columns_to_pointcloud2,
    pointcloud2_dtype,
    pointcloud2_to_array,
    scan_to_pointcloud2,
)
from dynfusion_ros.ros.convert.radar import RadarLayout, RadarReader, pointcloud2_to_radar_scan
from dynfusion_ros.ros.convert.stamps import header_msg, stamp_ns, time_msg

__all__ = [
    "ConversionError",
    "LidarLayout",
    "LidarReader",
    "RadarLayout",
    "RadarReader",
    "array_to_image",
    "array_to_pointcloud2",
    "camera_info_to_model",
    "columns_to_pointcloud2",
    "compressed_to_camera_image",
    "detection_array_to_detections",
    "detections_to_array",
    "energy_record_to_msg",
    "estimate_to_odometry",
    "estimate_to_transform",
    "header_msg",
    "image_to_array",
    "image_to_camera_image",
    "imu_to_sample",
    "label_info",
    "label_info_to_names",
    "model_to_camera_info",
    "msg_to_energy_record",
    "msg_to_selection",
    "odometry_to_estimate",
    "pointcloud2_dtype",
    "pointcloud2_to_array",
    "pointcloud2_to_lidar_scan",
    "pointcloud2_to_radar_scan",
    "sample_to_imu",
    "scan_to_pointcloud2",
    "selection_to_msg",
    "stamp_ns",
    "time_msg",
    "to_rgb8",
]
