"""Frames out of a rosbag2, through the same message conversions the nodes use.

Training and offline evaluation read bags here. Frames are keyed on the ground-truth
stamps of a simulated bag (one per camera period), so a silent or blacked-out sensor
leaves a frame without that modality instead of leaving no frame at all. Each sensor
contributes its latest message stamped no later than the frame (plus a small tolerance
for jitter) and no older than its ``max_age``; otherwise it is unavailable for the frame.

Messages are read in one pass in log-time order with a short look-behind buffer, so a
long bag never sits in memory whole, and converted as they arrive exactly as the nodes
convert them (``frames.SensorDoor``, the same sensor parameters: topics, field layouts,
the tf tree), so an offline run and a node run of a bag see the same frames. Problems (a
malformed message, a sensor frame with no transform) are reported once per topic and
reason through ``on_problem`` and the frame goes on without the message.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from dynfusion_ros.core.types import NS_PER_S, Detection, Modality, SensorFrame
from dynfusion_ros.ros.convert import ConversionError, detection_array_to_detections, stamp_ns
from dynfusion_ros.ros.frames import FrameBuilder, Refusal, SensorDoor, assemble
from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS, bag_topic
from dynfusion_ros.ros.sync import FRAME_SENSORS
from dynfusion_ros.ros.typestore import bag_typestore


@dataclass(frozen=True)
class BagTopics:
    """Where a bag's messages are: the sensor topics come from the sensor parameters."""

    camera: str
    camera_info: str
    lidar: str
    radar: str
    imu: str
    tf_static: str = "/tf_static"
    tf: str = "/tf"
    truth: str = "/ground_truth/objects"
    context: str = "/scenario/context"

    @classmethod
    def from_values(cls, values: dict) -> BagTopics:
        """The sensor topics of the sensor parameters (``sensor_params``)."""
        return cls(
            camera=bag_topic(values["camera_topic"]),
            camera_info=bag_topic(values["camera_info_topic"]),
            lidar=bag_topic(values["lidar_topic"]),
            radar=bag_topic(values["radar_topic"]),
            imu=bag_topic(values["imu_topic"]),
        )


@dataclass(frozen=True)
class FrameTiming:
    """How sensors are matched to a frame stamp (seconds), from the sensor parameters the
    nodes' frame sync takes too."""

    frame_period_s: float
    tolerance_s: float
    max_age_s: dict[Modality, float]
    lag_s: float = 0.3  # wait this long in log time for late messages before assembling

    @classmethod
    def from_values(cls, values: dict) -> FrameTiming:
        return cls(
            frame_period_s=values["frame_period_s"],
            tolerance_s=values["stamp_tolerance_s"],
            max_age_s={m: values[f"{m.value}_max_age_s"] for m in FRAME_SENSORS},
        )


@dataclass
class LabelledFrame:
    """A frame with what the bag says is true at its stamp."""

    frame: SensorFrame
    truth: list[Detection]
    context: str = ""
    faults: tuple[str, ...] = ()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _tell(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


class _Reporter:
    """Each problem and each note once per topic, with the bag's name."""

    def __init__(
        self, bag: Path, on_problem: Callable[[str], None], on_note: Callable[[str], None]
    ) -> None:
        self.bag, self.on_problem, self.on_note = bag, on_problem, on_note
        self.seen: set[tuple[str, str]] = set()

    def _first(self, topic: str, text: str) -> bool:
        new = (topic, text) not in self.seen
        self.seen.add((topic, text))
        return new

    def __call__(self, topic: str, reason: str) -> None:
        if self._first(topic, reason):
            self.on_problem(f"{self.bag}: {topic}: {reason} (message dropped)")

    def note(self, topic: str, text: str) -> None:
        if self._first(topic, text):
            self.on_note(f"{self.bag}: {topic}: {text}")


class _Latest:
    """Recent messages of one topic by header stamp, oldest first."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, object]] = deque()

    def add(self, stamp: int, item: object) -> None:
        self.items.append((stamp, item))

    def pick(self, stamp: int, tolerance_ns: int, max_age_ns: int):
        """The newest item stamped in [stamp - max_age, stamp + tolerance], or None."""
        window = [i for i in self.items if stamp - max_age_ns <= i[0] <= stamp + tolerance_ns]
        return max(window, key=lambda item: item[0]) if window else None

    def forget_before(self, stamp: int) -> None:
        while self.items and self.items[0][0] < stamp:
            self.items.popleft()


class _FrameAssembler:
    """Converts sensor messages as the nodes do (``SensorDoor``), buffers them, and
    builds the frame for each stamp."""

    def __init__(
        self, topics: BagTopics, timing: FrameTiming, values: dict, report: _Reporter
    ) -> None:
        self.topics, self.timing, self.report = topics, timing, report
        self.sensors = {
            topics.camera: Modality.CAMERA,
            topics.lidar: Modality.LIDAR,
            topics.radar: Modality.RADAR,
            topics.imu: Modality.IMU,
        }
        self.topic_of = {modality: topic for topic, modality in self.sensors.items()}
        self.buffers = {m: _Latest() for m in FRAME_SENSORS}
        self.imu: deque[tuple[int, object]] = deque()
        self.contexts = _Latest()
        self.door = SensorDoor(
            FrameBuilder(values, self._note), values, self._ready, self._refused, self._note
        )

    def _note(self, modality: Modality, text: str) -> None:
        self.report.note(self.topic_of[modality], text)

    def _refused(self, modality: Modality, refusal: Refusal) -> None:
        self.report(self.topic_of[modality], refusal.detail)

    def _ready(self, modality: Modality, data, _: int) -> None:
        if modality is Modality.IMU:
            self.imu.append((data.stamp_ns, data))
        else:
            self.buffers[modality].add(data.stamp_ns, data)

    def handle(self, topic: str, msg, log_ns: int) -> None:
        """Take one deserialised message; conversion errors reach the reporter."""
        topics = self.topics
        try:
            if topic in (topics.tf_static, topics.tf):
                self.door.take_transforms(msg)
            elif topic == topics.camera_info:
                self.door.take_camera_info(msg)
            elif topic in self.sensors:
                self.door.admit(self.sensors[topic], msg, log_ns)
            elif topic == topics.context:
                self.contexts.add(stamp_ns(msg.header), (msg.context, tuple(msg.faults)))
        except ConversionError as error:
            self.report(topic, str(error))

    def ready(self, stamp: int, log_ns: int, lag_ns: int) -> bool:
        """Whether the frame at ``stamp`` can be built at log time ``log_ns``: its wait
        for late messages is over, and none it could use is still held for calibration
        (a tf tree published after the data), unless that wait is over too."""
        if log_ns < stamp + lag_ns:
            return False
        oldest = self.door.oldest_held_ns()
        return oldest is None or oldest > stamp + lag_ns or log_ns >= oldest + self.door.hold_ns

    def _pick(self, modality: Modality, stamp: int) -> tuple[int, object] | None:
        max_age = round(self.timing.max_age_s[modality] * NS_PER_S)
        tolerance = round(self.timing.tolerance_s * NS_PER_S)
        return self.buffers[modality].pick(stamp, tolerance, max_age)

    def assemble(self, stamp: int, truth: list[Detection]) -> LabelledFrame:
        picked = {m: self._pick(m, stamp) for m in FRAME_SENSORS}
        imu = []
        while self.imu and self.imu[0][0] <= stamp:  # since the last frame, as the nodes
            imu.append(self.imu.popleft()[1])
        frame = assemble(stamp, {m: p for m, p in picked.items() if p is not None}, imu)
        context = self.contexts.pick(stamp, 0, 10 * NS_PER_S)
        label, faults = ("", ()) if context is None else context[1]
        for buffer in self.buffers.values():
            buffer.forget_before(stamp - NS_PER_S)
        return LabelledFrame(frame, truth, label, faults)


def read_frames(
    bag: Path,
    *,
    values: dict | None = None,
    on_problem: Callable[[str], None] = _warn,
    on_note: Callable[[str], None] = _tell,
) -> Iterator[LabelledFrame]:
    """Labelled frames of a bag with ground truth, in stamp order; ``values`` are the
    sensor parameters (``sensor_params.load_params_file``), the defaults when None.
    ``on_note`` hears how a driver's layout was read, or what a topic lacked."""
    values = values or SENSOR_DEFAULTS
    topics, timing = BagTopics.from_values(values), FrameTiming.from_values(values)
    reporter = _Reporter(Path(bag), on_problem, on_note)
    assembler = _FrameAssembler(topics, timing, values, reporter)
    store = bag_typestore()
    period_ns = round(timing.frame_period_s * NS_PER_S)
    lag_ns = round(timing.lag_s * NS_PER_S)
    pending: deque[tuple[int, list[Detection]]] = deque()
    last_truth: int | None = None
    with _open(bag) as reader:
        connections = [c for c in reader.connections if c.topic in _wanted(topics)]
        _learn_types(store, connections)
        if topics.truth not in {c.topic for c in connections}:
            raise ValueError(f"{bag}: no {topics.truth} topic: not a labelled bag")
        for connection, log_ns, raw in reader.messages(connections=connections):
            while pending and assembler.ready(pending[0][0], log_ns, lag_ns):
                yield assembler.assemble(*pending.popleft())
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
            except (SerdeError, ValueError, KeyError, IndexError, AssertionError) as error:
                assembler.report(connection.topic, f"cannot deserialize: {error}")
                continue
            if connection.topic != topics.truth:
                assembler.handle(connection.topic, msg, log_ns)
                continue
            stamp = stamp_ns(msg.header)
            # ground truth comes at every camera and radar stamp: keep one per frame period
            if last_truth is None or stamp >= last_truth + period_ns - NS_PER_S // 500:
                try:
                    pending.append((stamp, detection_array_to_detections(msg)))
                    last_truth = stamp
                except ConversionError as error:
                    assembler.report(connection.topic, str(error))
        while pending:
            yield assembler.assemble(*pending.popleft())


@contextmanager
def _open(bag: Path) -> Iterator[Reader]:
    """An open bag reader; an unreadable bag is a ValueError naming it."""
    try:
        reader = Reader(bag)
        reader.open()
    except ReaderError as error:
        raise ValueError(f"{bag}: cannot read the bag: {error}") from None
    try:
        yield reader
    finally:
        reader.close()


def _learn_types(store, connections) -> None:
    """Types our store lacks (radar_msgs/RadarScan, a driver's own) from the definitions
    the bag carries, so they deserialize without their package installed."""
    from rosbags.typesys import get_types_from_msg

    for connection in connections:
        if connection.msgtype in store.types or not (connection.msgdef and connection.msgdef.data):
            continue
        try:
            found = get_types_from_msg(connection.msgdef.data, connection.msgtype)
        except Exception as error:  # rosbags raises its own parser errors
            raise ValueError(
                f"{connection.topic}: cannot read the definition of {connection.msgtype}: {error}"
            ) from None
        store.register({name: kind for name, kind in found.items() if name not in store.types})


def _wanted(topics: BagTopics) -> set[str]:
    return set(vars(topics).values())


def bag_duration_frames(bag: Path, values: dict | None = None) -> int:
    """How many frames ``read_frames`` will yield, from the bag's metadata (for progress)."""
    timing = FrameTiming.from_values(values or SENSOR_DEFAULTS)
    with _open(bag) as reader:
        truth = [c for c in reader.connections if c.topic == BagTopics.truth]
        if not truth:
            return 0
        return max(1, round(reader.duration / NS_PER_S / timing.frame_period_s))
