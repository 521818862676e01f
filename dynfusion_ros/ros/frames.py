"""Sensor messages of one frame -> a core ``SensorFrame``, with the calibration they need.

Shared by the nodes (frames from ``sync.FrameSync``) and the bag reader, so a frame is
built the same way live and offline. The builder keeps what arrives once: the camera's
CameraInfo and the /tf_static extrinsics (base_link -> each sensor frame). A message
that cannot be used (malformed, or from a frame with no transform) is left out of the
frame and its problem returned, for the caller to report with the topic. The nodes
convert each message as it arrives (so a malformed one never keys or fills a frame);
the bag reader converts only the messages a frame uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from dynfusion_ros.core.types import (
    CameraImage,
    ImuSample,
    Modality,
    PointScan,
    SensorFrame,
    imu_in_base,
)
from dynfusion_ros.ros.convert import (
    ConversionError,
    camera_info_to_model,
    image_to_camera_image,
    imu_to_sample,
    pointcloud2_to_lidar_scan,
    pointcloud2_to_radar_scan,
)
from dynfusion_ros.ros.convert.geometry import transform_to_matrix


class FrameBuilder:
    def __init__(self) -> None:
        self.camera_model = None
        self.extrinsics: dict[str, np.ndarray] = {}
        self.base_of: dict[str, str] = {}  # child frame -> the frame its transform is from
        self.turned: set[str] = set()  # child frames rotated against their parent

    def take_camera_info(self, msg) -> None:
        """Raises ConversionError for a malformed CameraInfo (the previous one stays)."""
        self.camera_model = camera_info_to_model(msg)

    def take_transforms(self, msg) -> None:
        """A tf2_msgs/TFMessage from /tf_static: every child frame's pose in its parent."""
        for transform in msg.transforms:
            child = transform.child_frame_id
            self.extrinsics[child] = transform_to_matrix(transform)
            self.base_of[child] = transform.header.frame_id
            self.turned.discard(child)
            if not np.allclose(self.extrinsics[child][:3, :3], np.eye(3), atol=1e-9):
                self.turned.add(child)

    def convert(self, modality: Modality, msg) -> CameraImage | PointScan | ImuSample:
        """One sensor message in the core's types (camera and point clouds placed on
        base_link, IMU samples turned to its axes); ConversionError when it is malformed
        or (camera, clouds) its frame has no transform. An IMU whose frame /tf_static
        does not name is taken as mounted level, with base_link's axes."""
        if modality is Modality.IMU:
            sample = imu_to_sample(msg)
            if sample.frame_id not in self.turned:  # level (or unknown): as it is, at 200 Hz
                return sample
            rotation = self.extrinsics[sample.frame_id][:3, :3]
            return imu_in_base(sample, rotation, self.base_of[sample.frame_id])
        if modality is Modality.CAMERA:
            if self.camera_model is None:
                raise ConversionError("camera_info", "no CameraInfo received yet")
            data = image_to_camera_image(msg, self.camera_model)
            frame_id = data.model.frame_id
        elif modality is Modality.LIDAR:
            data = pointcloud2_to_lidar_scan(msg)
            frame_id = data.frame_id
        else:
            data = pointcloud2_to_radar_scan(msg)
            frame_id = data.frame_id
        if frame_id not in self.extrinsics:
            raise ConversionError(
                "header.frame_id", f"no /tf_static transform from base_link to {frame_id!r}"
            )
        data.T_base_sensor = self.extrinsics[frame_id]
        return data

    def build(
        self,
        stamp_ns: int,
        messages: dict[Modality, tuple[int, object]],
        imu: Iterable[object] = (),
    ) -> tuple[SensorFrame, dict[Modality, ConversionError]]:
        """The frame from unconverted ``messages`` (sensor -> (stamp, message)) and IMU
        messages, and why each message left out could not be used."""
        converted: dict[Modality, tuple[int, object]] = {}
        problems: dict[Modality, ConversionError] = {}
        for modality, (stamp, msg) in messages.items():
            try:
                converted[modality] = (stamp, self.convert(modality, msg))
            except ConversionError as error:
                problems[modality] = error
        samples = []
        for msg in imu:
            try:
                samples.append(self.convert(Modality.IMU, msg))
            except ConversionError as error:
                problems[Modality.IMU] = error
        return assemble(stamp_ns, converted, samples), problems


def assemble(
    stamp_ns: int, data: dict[Modality, tuple[int, object]], imu: Iterable[ImuSample]
) -> SensorFrame:
    """A frame from converted sensor data (sensor -> (stamp, data)) and IMU samples."""
    frame = SensorFrame(stamp_ns=stamp_ns, imu=tuple(imu))
    for modality, (stamp, item) in data.items():
        setattr(frame, modality.value, item)
        frame.sensor_stamps_ns[modality] = stamp
    return frame
