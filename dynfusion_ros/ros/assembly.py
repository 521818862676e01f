"""Sensor messages in, frames out: the conversion door (``frames.SensorDoor``: field
checks, calibration holds, thinning) in front of the frame sync (``sync.FrameSync``),
on a clock the caller gives.

The nodes run it on the node clock, the offline tools (``bag_frames``) on a bag's log
times, which is the clock a replay of that bag gives the nodes. There is one frame
assembler and one set of settings (the sensor parameters), so a bag read offline is cut
into the frames the nodes would cut it into.
"""

from __future__ import annotations

from collections.abc import Callable

from dynfusion_ros.core.types import Modality, SensorFrame
from dynfusion_ros.ros.frames import FrameBuilder, Refusal, SensorDoor, assemble
from dynfusion_ros.ros.sensor_params import sync_settings
from dynfusion_ros.ros.sync import FrameSync, SyncedFrame

POLL_PERIOD_S = 0.01  # how often the nodes check waiting frames against their timeout


class FrameAssembly:
    """``on_frame(synced, frame)`` hears each frame, oldest first; ``on_refused(sensor,
    kind, detail)`` each message refused, by the door or the sync (``kind`` a bounded
    key, ``detail`` with the figures); ``note(sensor, text)`` how a topic was read;
    ``on_time_jump(why)`` that the clock went back and buffered messages were forgotten."""

    def __init__(
        self,
        values: dict,
        clock: Callable[[], int],
        on_frame: Callable[[SyncedFrame, SensorFrame], None],
        *,
        on_refused: Callable[[Modality, str, str], None],
        note: Callable[[Modality, str], None],
        on_time_jump: Callable[[str], None] | None = None,
    ) -> None:
        self.clock, self.on_frame, self.on_refused = clock, on_frame, on_refused
        self.builder = FrameBuilder(values, note)
        self.sync = FrameSync(sync_settings(values), on_time_jump, on_refused)
        self.door = SensorDoor(self.builder, values, self._ready, self._refused, note)

    def admit(self, modality: Modality, msg) -> None:
        """A sensor message, arrived now."""
        self.door.admit(modality, msg, self.clock())

    def take_camera_info(self, msg) -> None:
        """ConversionError for a malformed one (the previous one stays)."""
        self.door.take_camera_info(msg)

    def take_transforms(self, msg) -> None:
        """ConversionError for a malformed transform (the others in the message are taken)."""
        self.door.take_transforms(msg)

    def poll(self) -> None:
        """Hand on the frames whose wait is over by the clock now."""
        self._emit(self.sync.poll(self.clock()))

    def _ready(self, modality: Modality, data, arrived_ns: int) -> None:
        # a message held for its calibration arrived a while ago: the clock is read now,
        # so a new loop of a bag resets the sync before the message is added
        self.sync.watch_clock(self.clock())
        self._emit(self.sync.add(modality, data.stamp_ns, data, arrived_ns))

    def _refused(self, modality: Modality, refusal: Refusal) -> None:
        self.sync.refuse(modality, refusal.reason)
        self.on_refused(modality, refusal.reason, refusal.detail)

    def _emit(self, frames: list[SyncedFrame]) -> None:
        for synced in frames:
            imu = [sample for _, sample in synced.imu]
            self.on_frame(synced, assemble(synced.stamp_ns, synced.messages, imu))
