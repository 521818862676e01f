"""Frames out of a rosbag2, through the same message conversions the nodes use.

Training and offline evaluation read bags here. Frames are keyed on the ground-truth
stamps of a simulated bag (one per camera period), so a silent or blacked-out sensor
leaves a frame without that modality instead of leaving no frame at all. Each sensor
contributes its latest message stamped no later than the frame (plus a small tolerance
for jitter) and no older than its ``max_age``; otherwise it is unavailable for the frame.

Messages are read in one pass in log-time order with a short look-behind buffer, so a
long bag never sits in memory whole. Problems (a malformed message, a sensor frame with
no transform) are reported once per topic and reason through ``on_problem`` and the
frame goes on without the message.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from dynfusion_ros.core.types import NS_PER_S, Detection, Modality, SensorFrame
from dynfusion_ros.ros.convert import ConversionError, detection_array_to_detections, stamp_ns
from dynfusion_ros.ros.frames import FrameBuilder
from dynfusion_ros.ros.typestore import bag_typestore


@dataclass(frozen=True)
class BagTopics:
    camera: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    lidar: str = "/lidar/points"
    radar: str = "/radar/points"
    imu: str = "/imu/data"
    tf_static: str = "/tf_static"
    truth: str = "/ground_truth/objects"
    context: str = "/scenario/context"


@dataclass(frozen=True)
class FrameTiming:
    """How sensors are matched to a frame stamp (seconds)."""

    frame_period_s: float = 0.1
    tolerance_s: float = 0.03
    max_age_s: dict[Modality, float] = field(
        default_factory=lambda: {Modality.CAMERA: 0.12, Modality.LIDAR: 0.12, Modality.RADAR: 0.1}
    )
    lag_s: float = 0.3  # wait this long in log time for late messages before assembling


@dataclass
class LabelledFrame:
    """A frame with what the bag says is true at its stamp."""

    frame: SensorFrame
    truth: list[Detection]
    context: str = ""
    faults: tuple[str, ...] = ()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _Reporter:
    def __init__(self, bag: Path, on_problem: Callable[[str], None]) -> None:
        self.bag, self.on_problem = bag, on_problem
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, topic: str, reason: str) -> None:
        key = (topic, reason)
        if key not in self.seen:
            self.seen.add(key)
            self.on_problem(f"{self.bag}: {topic}: {reason} (message dropped)")


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
    """Buffers sensor messages (converted only when a frame uses them) and builds the
    frame for each stamp."""

    def __init__(self, topics: BagTopics, timing: FrameTiming, report: _Reporter) -> None:
        self.topics, self.timing, self.report = topics, timing, report
        self.sensors = {
            topics.camera: Modality.CAMERA,
            topics.lidar: Modality.LIDAR,
            topics.radar: Modality.RADAR,
        }
        self.topic_of = {modality: topic for topic, modality in self.sensors.items()}
        self.topic_of[Modality.IMU] = topics.imu
        self.buffers = {modality: _Latest() for modality in self.sensors.values()}
        self.imu: deque[tuple[int, object]] = deque()
        self.contexts = _Latest()
        self.builder = FrameBuilder()
        self.previous_stamp: int | None = None

    def handle(self, topic: str, msg) -> None:
        """Take one deserialised message; conversion errors reach the reporter."""
        topics = self.topics
        try:
            if topic == topics.tf_static:
                self.builder.take_transforms(msg)
            elif topic == topics.camera_info:
                self.builder.take_camera_info(msg)
            elif topic in self.sensors:
                self.buffers[self.sensors[topic]].add(stamp_ns(msg.header), msg)
            elif topic == topics.imu:
                self.imu.append((stamp_ns(msg.header), msg))
            elif topic == topics.context:
                self.contexts.add(stamp_ns(msg.header), (msg.context, tuple(msg.faults)))
        except ConversionError as error:
            self.report(topic, str(error))

    def _pick(self, modality: Modality, stamp: int) -> tuple[int, object] | None:
        max_age = round(self.timing.max_age_s[modality] * NS_PER_S)
        tolerance = round(self.timing.tolerance_s * NS_PER_S)
        return self.buffers[modality].pick(stamp, tolerance, max_age)

    def assemble(self, stamp: int, truth: list[Detection]) -> LabelledFrame:
        picked = {m: self._pick(m, stamp) for m in self.sensors.values()}
        period_ns = round(self.timing.frame_period_s * NS_PER_S)
        start = self.previous_stamp if self.previous_stamp is not None else stamp - period_ns
        imu = [msg for t, msg in self.imu if start < t <= stamp]
        frame, problems = self.builder.build(
            stamp, {m: p for m, p in picked.items() if p is not None}, imu
        )
        for modality, problem in problems.items():
            self.report(self.topic_of[modality], str(problem))
        context = self.contexts.pick(stamp, 0, 10 * NS_PER_S)
        label, faults = ("", ()) if context is None else context[1]
        self.previous_stamp = stamp
        for buffer in self.buffers.values():
            buffer.forget_before(stamp - NS_PER_S)
        while self.imu and self.imu[0][0] <= stamp:
            self.imu.popleft()
        return LabelledFrame(frame, truth, label, faults)


def read_frames(
    bag: Path,
    *,
    topics: BagTopics | None = None,
    timing: FrameTiming | None = None,
    on_problem: Callable[[str], None] = _warn,
) -> Iterator[LabelledFrame]:
    """Labelled frames of a bag with ground truth, in stamp order."""
    topics, timing = topics or BagTopics(), timing or FrameTiming()
    assembler = _FrameAssembler(topics, timing, _Reporter(Path(bag), on_problem))
    store = bag_typestore()
    period_ns = round(timing.frame_period_s * NS_PER_S)
    lag_ns = round(timing.lag_s * NS_PER_S)
    pending: deque[tuple[int, list[Detection]]] = deque()
    last_truth: int | None = None
    with _open(bag) as reader:
        connections = [c for c in reader.connections if c.topic in _wanted(topics)]
        if topics.truth not in {c.topic for c in connections}:
            raise ValueError(f"{bag}: no {topics.truth} topic: not a labelled bag")
        for connection, log_ns, raw in reader.messages(connections=connections):
            while pending and pending[0][0] + lag_ns <= log_ns:
                yield assembler.assemble(*pending.popleft())
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
            except (SerdeError, ValueError, KeyError, IndexError, AssertionError) as error:
                assembler.report(connection.topic, f"cannot deserialize: {error}")
                continue
            if connection.topic != topics.truth:
                assembler.handle(connection.topic, msg)
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


def _wanted(topics: BagTopics) -> set[str]:
    return set(vars(topics).values())


def bag_duration_frames(bag: Path, timing: FrameTiming | None = None) -> int:
    """How many frames ``read_frames`` will yield, from the bag's metadata (for progress)."""
    timing = timing or FrameTiming()
    with _open(bag) as reader:
        truth = [c for c in reader.connections if c.topic == BagTopics().truth]
        if not truth:
            return 0
        return max(1, round(reader.duration / NS_PER_S / timing.frame_period_s))
