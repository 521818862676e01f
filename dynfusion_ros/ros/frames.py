"""Sensor messages of one frame -> a core ``SensorFrame``, with the calibration they need.

Shared by the nodes (frames from ``sync.FrameSync``) and the bag reader, so a frame is
built the same way live and offline, from the same sensor parameters
(``sensor_params``). The builder keeps what arrives once or rarely: the camera's
CameraInfo and the robot's tf tree (/tf_static and /tf, chained; see
``core.transforms``). A message that cannot be used (malformed, or from a frame the tree
cannot place on the base frame) raises ConversionError for the caller to report with
the topic; what a conversion used only in part, or concluded about a driver's layout,
reaches ``note``. ``SensorDoor`` converts each message as it arrives, for the nodes and
the bag reader alike, so a malformed one never keys or fills a frame.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.transforms import TransformError, TransformTree
from dynfusion_ros.core.types import (
    NS_PER_S,
    CameraImage,
    ImuSample,
    Modality,
    PointScan,
    SensorFrame,
    imu_in_base,
)
from dynfusion_ros.ros.convert import (
    ConversionError,
    LidarReader,
    RadarReader,
    camera_info_to_model,
    compressed_to_camera_image,
    image_to_camera_image,
    imu_to_sample,
)
from dynfusion_ros.ros.convert.geometry import transform_to_matrix
from dynfusion_ros.ros.sensor_params import (
    SENSOR_DEFAULTS,
    compressed_camera,
    lidar_layout,
    radar_layout,
)

# Parents that place the robot in the world (REP-105), never a sensor on the robot: the
# odometry this package publishes on /tf is not a mount.
WORLD_FRAMES = frozenset({"odom", "map", "earth"})
# why a message waits, then is refused: kinds, the frame names go in the detail
NO_CAMERA_INFO = "no CameraInfo received yet"
NO_MOUNT = "no transform to the base frame"
FROZEN = "frozen image (identical to the ones before)"
FROZEN_AFTER = 5  # identical images in a row: a stuck driver (sensor noise differs every frame)


class MountUnknownError(ConversionError):
    """The message's frame cannot be placed on the base frame yet (the tf tree lacks a
    link): the message may be held until it can."""


class FrameBuilder:
    def __init__(
        self,
        values: dict | None = None,
        note: Callable[[Modality, str], None] = lambda modality, text: None,
    ) -> None:
        values = values or SENSOR_DEFAULTS
        self.base_frame = values["base_frame"].lstrip("/")
        self.compressed = compressed_camera(values)
        self.camera_model = None
        self.tree = TransformTree()
        self.lidar = LidarReader(lidar_layout(values), lambda text: note(Modality.LIDAR, text))
        self.radar = RadarReader(radar_layout(values), lambda text: note(Modality.RADAR, text))
        self._mounts: dict[str, tuple[int, np.ndarray]] = {}  # frame -> (tree version, T)

    def take_camera_info(self, msg) -> None:
        """Raises ConversionError for a malformed CameraInfo (the previous one stays)."""
        self.camera_model = camera_info_to_model(msg)

    def take_transforms(self, msg) -> None:
        """A tf2_msgs/TFMessage from /tf_static or /tf: every edge in it. A malformed
        transform is skipped, and raised once the good ones are in."""
        problem = None
        for transform in msg.transforms:
            parent = transform.header.frame_id.lstrip("/")
            if parent in WORLD_FRAMES:
                continue
            try:
                self.tree.add(parent, transform.child_frame_id, transform_to_matrix(transform))
            except (ConversionError, ValueError) as error:
                problem = ConversionError(
                    f"transform {parent!r} -> {transform.child_frame_id!r}", str(error)
                )
        if problem is not None:
            raise problem

    def mount(self, frame_id: str) -> np.ndarray:
        """T_base_frame; MountUnknownError naming the missing link."""
        cached = self._mounts.get(frame_id)
        if cached is not None and cached[0] == self.tree.version:
            return cached[1]
        try:
            matrix = self.tree.lookup(self.base_frame, frame_id)
        except TransformError as error:
            raise MountUnknownError(
                "header.frame_id", f"no transform from {self.base_frame!r} to {frame_id!r}: {error}"
            ) from None
        self._mounts[frame_id] = (self.tree.version, matrix)
        return matrix

    def convert(self, modality: Modality, msg) -> CameraImage | PointScan | ImuSample:
        """One sensor message in the core's types (camera and point clouds placed on the
        base frame, IMU samples turned to its axes); ConversionError when it is malformed,
        MountUnknownError when its frame is not in the tf tree (an IMU too: one taken as level
        when it is not would start the filter tilted or upside down)."""
        if modality is Modality.IMU:
            sample = imu_to_sample(msg)
            rotation = self.mount(sample.frame_id)[:3, :3]
            if np.allclose(rotation, np.eye(3), atol=1e-9):
                return sample
            return imu_in_base(sample, rotation, self.base_frame)
        if modality is Modality.CAMERA:
            if self.camera_model is None:
                raise ConversionError("camera_info", "no CameraInfo received yet")
            read = compressed_to_camera_image if self.compressed else image_to_camera_image
            data = read(msg, self.camera_model)
            frame_id = data.model.frame_id
        elif modality is Modality.LIDAR:
            data = self.lidar.read(msg)
            frame_id = data.frame_id
        else:
            data = self.radar.read(msg)
            frame_id = data.frame_id
        data.T_base_sensor = self.mount(frame_id)
        return data


def assemble(
    stamp_ns: int, data: dict[Modality, tuple[int, object]], imu: Iterable[ImuSample]
) -> SensorFrame:
    """A frame from converted sensor data (sensor -> (stamp, data)) and IMU samples."""
    frame = SensorFrame(stamp_ns=stamp_ns, imu=tuple(imu))
    for modality, (stamp, item) in data.items():
        setattr(frame, modality.value, item)
        frame.sensor_stamps_ns[modality] = stamp
    return frame


@dataclass(frozen=True)
class Refusal:
    """Why a message was not used: ``reason`` short (a counter's key), ``detail`` with
    the field and values (the log line)."""

    reason: str
    detail: str


class SensorDoor:
    """Converts each sensor message as it arrives and hands it to ``on_ready(modality,
    data, arrived_ns)``; a refused one goes to ``on_refused(modality, Refusal)``.

    A message that comes before its calibration (the first CameraInfo, the tf link of its
    frame: at start-up they often come after the first data, and a robot_state_publisher
    may start last) waits for it, up to ``calibration_hold_s``, and is then handed on in
    arrival order, so the first frames are built as if it had been there all along and
    the IMU filter never starts on axes it cannot place. Older ones are refused and
    counted. Clouds larger than ``<sensor>_max_points`` are thinned, and noted.

    A camera whose images stop changing (``FROZEN_AFTER`` identical in a row: a stuck
    driver re-sending its last image with new stamps) has them refused as frozen, so
    the camera goes silent for the sync and the gate stops paying for it.
    """

    def __init__(
        self,
        builder: FrameBuilder,
        values: dict,
        on_ready: Callable[[Modality, object, int], None],
        on_refused: Callable[[Modality, Refusal], None],
        note: Callable[[Modality, str], None],
    ) -> None:
        self.builder, self.note = builder, note
        self.on_ready, self.on_refused = on_ready, on_refused
        self.hold_ns = round(values["calibration_hold_s"] * NS_PER_S)
        self.max_points = {
            Modality.LIDAR: values["lidar_max_points"],
            Modality.RADAR: values["radar_max_points"],
        }
        self.thinned = dict.fromkeys(self.max_points, 0)
        self._last_image: bytes | None = None  # digest of the previous image's pixels
        self._identical = 0  # images in a row identical to the one before them
        self.early: dict[Modality, deque[tuple[object, int, Refusal]]] = {}

    def take_camera_info(self, msg) -> None:
        """ConversionError for a malformed one (the previous one stays)."""
        before = self._calibration()
        self.builder.take_camera_info(msg)
        self._release_if_changed(before)

    def take_transforms(self, msg) -> None:
        """ConversionError for a malformed transform (the others in the message are taken)."""
        before = self._calibration()
        try:
            self.builder.take_transforms(msg)
        finally:
            self._release_if_changed(before)

    def _calibration(self) -> tuple[bool, int]:
        return self.builder.camera_model is not None, self.builder.tree.version

    def _release_if_changed(self, before: tuple[bool, int]) -> None:
        """Try the held messages again only when something they wait for may have come:
        CameraInfo repeats at the camera rate and /tf at up to 100 Hz, and converting a
        second of held clouds on each would be most of a core."""
        if self.early and self._calibration() != before:
            self._release()

    def admit(self, modality: Modality, msg, arrived_ns: int) -> None:
        """Convert ``msg`` and hand it on, or hold it until its calibration comes, or
        refuse it. A malformed message is refused even while it waits for calibration."""
        if modality is Modality.CAMERA and self.builder.camera_model is None:
            self._hold(modality, msg, arrived_ns, NO_CAMERA_INFO, NO_CAMERA_INFO)
            return
        try:
            data = self.builder.convert(modality, msg)
        except MountUnknownError as error:
            self._hold(modality, msg, arrived_ns, NO_MOUNT, error.problem)
            return
        except ConversionError as error:
            self.on_refused(modality, Refusal(error.kind, str(error)))
            return
        except (ValueError, TypeError, OverflowError, IndexError) as error:
            # no reader check caught it: still this message's fault, never the node's end
            detail = f"unreadable: {type(error).__name__}: {error}"
            self.on_refused(modality, Refusal("malformed message", detail))
            return
        if modality is Modality.CAMERA and self._frozen(data.pixels):
            detail = f"{self._identical + 1} identical images in a row: the camera is stuck"
            self.on_refused(modality, Refusal(FROZEN, detail))
            return
        limit = self.max_points.get(modality)
        if limit is not None and len(data) > limit:
            self.thinned[modality] += 1
            self.note(modality, f"clouds of more than {limit} points thinned to it (every k-th)")
            data = data.thinned(limit)
        self.on_ready(modality, data, arrived_ns)

    def _frozen(self, pixels: np.ndarray) -> bool:
        digest = hashlib.blake2b(np.ascontiguousarray(pixels), digest_size=16).digest()
        self._identical = self._identical + 1 if digest == self._last_image else 0
        self._last_image = digest
        return self._identical >= FROZEN_AFTER - 1

    def _hold(self, modality: Modality, msg, arrived_ns: int, kind: str, missing: str) -> None:
        queue = self.early.setdefault(modality, deque())
        queue.append((msg, arrived_ns, Refusal(kind, f"{missing} (held)")))
        while queue and queue[0][1] < arrived_ns - self.hold_ns:
            refusal = queue.popleft()[2]
            self.on_refused(modality, Refusal(refusal.reason, f"{refusal.detail} too long"))

    def _release(self) -> None:
        """Hand on, in arrival order, the held messages; those still lacking their
        calibration are held again."""
        held = [(arrived, m, msg) for m, queue in self.early.items() for msg, arrived, _ in queue]
        self.early.clear()
        for arrived, modality, msg in sorted(held, key=lambda item: item[0]):
            self.admit(modality, msg, arrived)
