"""Frames out of a rosbag2, cut as the nodes would cut a replay of it.

Training and offline evaluation read bags here. The messages go, in log-time order,
through the nodes' own frame assembly (``assembly.FrameAssembly``: the same conversions,
calibration holds, sync and settings), on a clock that is the bag's log time (the
``/clock`` a replay gives the nodes) and polled as often as the nodes poll. Frames are
keyed as the nodes key them (the camera, or the lidar while the camera is dead), and
paired with the ground truth by the rule the evaluation of a node recording uses
(``truth_frames``), so an offline evaluation and one of the nodes score the same frames.

One pass with short buffers, so a long bag never sits in memory whole. Problems (a
malformed message, a sensor frame with no transform, a stamp the sync refuses) are
reported once per topic and kind through ``on_problem``, and the frame goes on without
the message.
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
from dynfusion_ros.ros.assembly import POLL_PERIOD_S, FrameAssembly
from dynfusion_ros.ros.convert import ConversionError, detection_array_to_detections, stamp_ns
from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS, bag_topic
from dynfusion_ros.ros.truth_frames import TruthFrames
from dynfusion_ros.ros.typestore import bag_typestore

CONTEXT_KEPT_NS = 10 * NS_PER_S  # a context message holds until the next (they come at 10 Hz)


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


@dataclass
class LabelledFrame:
    """A frame with what the bag says is true at its stamp; ``truth`` None: a second
    frame in one frame period, run but not scored (``truth_frames``)."""

    frame: SensorFrame
    truth: list[Detection] | None
    context: str = ""
    faults: tuple[str, ...] = ()

    @property
    def scored(self) -> bool:
        return self.truth is not None


@dataclass(frozen=True)
class LostFrame:
    """A truth frame the sensors made no frame for (all silent, or past the timeout):
    the nodes would have published nothing for it."""

    stamp_ns: int
    truth: list[Detection]
    context: str = ""
    faults: tuple[str, ...] = ()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _tell(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


class _Reporter:
    """Each kind of problem and each note once per topic, with the bag's name."""

    def __init__(
        self, bag: Path, on_problem: Callable[[str], None], on_note: Callable[[str], None]
    ) -> None:
        self.bag, self.on_problem, self.on_note = bag, on_problem, on_note
        self.seen: set[tuple[str, str]] = set()

    def _first(self, topic: str, kind: str) -> bool:
        new = (topic, kind) not in self.seen
        self.seen.add((topic, kind))
        return new

    def __call__(self, topic: str, kind: str, detail: str) -> None:
        if self._first(topic, kind):
            self.on_problem(f"{self.bag}: {topic}: {detail} (message dropped)")

    def note(self, topic: str, text: str) -> None:
        if self._first(topic, text):
            self.on_note(f"{self.bag}: {topic}: {text}")


class _Contexts:
    """The scenario context in force at a stamp: the newest stamped at or before it."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, tuple[str, tuple[str, ...]]]] = deque()

    def add(self, stamp: int, context: tuple[str, tuple[str, ...]]) -> None:
        self.items.append((stamp, context))

    def at(self, stamp: int) -> tuple[str, tuple[str, ...]]:
        while len(self.items) > 1 and self.items[1][0] <= stamp - CONTEXT_KEPT_NS:
            self.items.popleft()
        before = [context for when, context in self.items if when <= stamp]
        return before[-1] if before else ("", ())


class _BagReplay:
    """A bag's messages through the nodes' frame assembly, on the bag's log time (the
    clock a replay gives the nodes), polled every ``POLL_PERIOD_S`` of it as the nodes
    poll; frames paired with the ground truth by ``TruthFrames``."""

    def __init__(
        self,
        topics: BagTopics,
        values: dict,
        report: _Reporter,
        on_lost: Callable[[LostFrame], None],
    ) -> None:
        self.topics, self.report, self.on_lost = topics, report, on_lost
        self.sensors = {
            topics.camera: Modality.CAMERA,
            topics.lidar: Modality.LIDAR,
            topics.radar: Modality.RADAR,
            topics.imu: Modality.IMU,
        }
        self.topic_of = {modality: topic for topic, modality in self.sensors.items()}
        self.clock_ns = 0
        self.next_poll_ns: int | None = None
        self.lost = 0
        self.jumped = False
        self.assembly = FrameAssembly(
            values,
            lambda: self.clock_ns,
            lambda _, frame: self.truth_frames.add_frame(frame.stamp_ns, frame),
            on_refused=lambda sensor, kind, detail: report(self.topic_of[sensor], kind, detail),
            note=lambda sensor, text: report.note(self.topic_of[sensor], text),
            on_time_jump=self._time_jumped,
        )
        self.timeout_ns = round(self.assembly.sync.settings.timeout_s * NS_PER_S)
        self.period_ns = round(self.assembly.sync.settings.frame_period_s * NS_PER_S)
        self.contexts = _Contexts()
        self.truth_frames: TruthFrames[SensorFrame] = TruthFrames(self.period_ns, self._lost)

    def _time_jumped(self, why: str) -> None:
        self.jumped = True
        self.report("log time", "time jump", why)

    def _lost(self, stamp: int, truth: list[Detection]) -> None:
        self.lost += 1
        self.on_lost(LostFrame(stamp, truth, *self.contexts.at(stamp)))

    def advance(self, log_ns: int) -> Iterator[LabelledFrame]:
        """The clock to ``log_ns``, polling on the way; the frames settled by then."""
        poll_ns = self.next_poll_ns if self.next_poll_ns is not None else log_ns
        poll_ns = max(poll_ns, log_ns - NS_PER_S)  # a gap in the bag: the timeouts suffice
        while poll_ns <= log_ns:
            self.clock_ns = poll_ns
            self.assembly.poll()
            poll_ns += round(POLL_PERIOD_S * NS_PER_S)
        self.next_poll_ns = poll_ns if log_ns >= self.clock_ns else log_ns
        self.clock_ns = log_ns
        self.assembly.poll()  # the clock going back is seen here, before the message
        if self.jumped:  # what was read before is settled; then the bag starts over
            yield from self._settled(final=True)
            self.contexts, self.jumped = _Contexts(), False
        else:
            yield from self._settled(final=False)

    def finish(self) -> Iterator[LabelledFrame]:
        """The bag ended: frames still waiting go out when their timeout would have."""
        yield from self.advance(self.clock_ns + self.timeout_ns + 1)
        yield from self._settled(final=True)

    def _settled(self, final: bool) -> Iterator[LabelledFrame]:
        for frame, truth in self.truth_frames.settled(final):
            yield LabelledFrame(frame, truth, *self.contexts.at(frame.stamp_ns))

    def handle(self, topic: str, msg) -> None:
        """Take one deserialised message; conversion errors reach the reporter."""
        topics = self.topics
        try:
            if topic in (topics.tf_static, topics.tf):
                self.assembly.take_transforms(msg)
            elif topic == topics.camera_info:
                self.assembly.take_camera_info(msg)
            elif topic in self.sensors:
                self.assembly.admit(self.sensors[topic], msg)
            elif topic == topics.context:
                self.contexts.add(stamp_ns(msg.header), (msg.context, tuple(msg.faults)))
            elif topic == topics.truth:
                self.truth_frames.add_truth(
                    stamp_ns(msg.header), detection_array_to_detections(msg)
                )
        except ConversionError as error:
            self.report(topic, error.kind, str(error))


def read_frames(
    bag: Path,
    *,
    values: dict | None = None,
    on_problem: Callable[[str], None] = _warn,
    on_note: Callable[[str], None] = _tell,
    on_lost: Callable[[LostFrame], None] = lambda _: None,
) -> Iterator[LabelledFrame]:
    """The frames of a bag with ground truth, as the nodes would assemble them from a
    replay of it, in stamp order; ``values`` are the sensor parameters
    (``sensor_params.load_params_file``), the defaults when None. ``on_note`` hears how
    a driver's layout was read, or what a topic lacked; ``on_lost`` each truth frame
    no frame was assembled for (the evaluators score it as one without output)."""
    values = values or SENSOR_DEFAULTS
    topics = BagTopics.from_values(values)
    reporter = _Reporter(Path(bag), on_problem, on_note)
    replay = _BagReplay(topics, values, reporter, on_lost)
    store = bag_typestore()
    with _open(bag) as reader:
        connections = [c for c in reader.connections if c.topic in _wanted(topics)]
        _learn_types(store, connections)
        if topics.truth not in {c.topic for c in connections}:
            raise ValueError(f"{bag}: no {topics.truth} topic: not a labelled bag")
        for connection, log_ns, raw in reader.messages(connections=connections):
            yield from replay.advance(log_ns)
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
            except (SerdeError, ValueError, KeyError, IndexError, AssertionError) as error:
                reporter(connection.topic, "cannot deserialize", f"cannot deserialize: {error}")
                continue
            replay.handle(connection.topic, msg)
        yield from replay.finish()
    if replay.lost:
        reporter.note(
            topics.truth,
            f"{replay.lost} truth frames had no frame assembled (sensors silent or late):"
            " the nodes would have published nothing for them",
        )


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
    """About how many frames ``read_frames`` will yield, from the bag's metadata (for
    progress)."""
    period_s = (values or SENSOR_DEFAULTS)["frame_period_s"]
    with _open(bag) as reader:
        truth = [c for c in reader.connections if c.topic == BagTopics.truth]
        if not truth:
            return 0
        return max(1, round(reader.duration / NS_PER_S / period_s))
