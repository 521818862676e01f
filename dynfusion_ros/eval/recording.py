"""Evaluate what the nodes *published*: a rosbag2 recorded from their topics, scored
against the ground truth replayed beside them.

Frames are the ground-truth frames of the drive (one per frame period, as the offline
evaluator takes them); a frame the nodes published nothing for counts with no
detections, so lost frames cost accuracy here exactly as they would on the road. The
summary is the one `dynfusion evaluate` prints, from the messages: branch usage from
/dynfusion/selection, energy and the odometry corrections that ran from
/dynfusion/energy, latency from each detection array's log time (the recorder's clock)
minus its stamp, and the odometry from /dynfusion/odometry against
/ground_truth/odometry.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from rosbags.rosbag2 import Reader

from dynfusion_ros.core.types import (
    NS_PER_S,
    Detection,
    EnergyRecord,
    OdometryEstimate,
    Selection,
)
from dynfusion_ros.eval.detection_metrics import ScoredFrame
from dynfusion_ros.eval.evaluation import Evaluation, FrameFacts, summarise
from dynfusion_ros.eval.trajectory import Trajectory
from dynfusion_ros.ros.convert import (
    detection_array_to_detections,
    msg_to_energy_record,
    msg_to_selection,
    odometry_to_estimate,
    stamp_ns,
)
from dynfusion_ros.ros.typestore import bag_typestore

TOPICS = {
    "detections": "/dynfusion/detections",
    "selection": "/dynfusion/selection",
    "energy": "/dynfusion/energy",
    "truth": "/ground_truth/objects",
    "context": "/scenario/context",
    "odometry": "/dynfusion/odometry",
    "truth_odometry": "/ground_truth/odometry",
}
ODOMETRY_COMPONENT = "odometry/"  # the energy report's prefix for a correction that ran
MATCH_NS = 2_000_000  # a published stamp within 2 ms of a truth stamp is that instant
FRAME_PERIOD_NS = NS_PER_S // 10
LATE_NS = 30_000_000  # a frame stamped this much after a truth frame still belongs to it


@dataclass
class Recording:
    """The messages of a recording, by stamp."""

    detections: dict[int, tuple[list[Detection], int]] = field(default_factory=dict)
    selections: dict[int, Selection] = field(default_factory=dict)
    energy: dict[int, EnergyRecord] = field(default_factory=dict)
    truth: dict[int, list[Detection]] = field(default_factory=dict)
    contexts: list[tuple[int, str]] = field(default_factory=list)  # (stamp, situation)
    odometry: list[OdometryEstimate] = field(default_factory=list)
    truth_odometry: list[OdometryEstimate] = field(default_factory=list)

    @classmethod
    def read(cls, bag: Path) -> Recording:
        store, recording = bag_typestore(), cls()
        wanted = set(TOPICS.values())
        with Reader(bag) as reader:
            connections = [c for c in reader.connections if c.topic in wanted]
            missing = {TOPICS["detections"], TOPICS["truth"]} - {c.topic for c in connections}
            if missing:
                raise ValueError(f"{bag}: no {', '.join(sorted(missing))} recorded")
            for connection, log_ns, raw in reader.messages(connections=connections):
                recording._take(
                    connection.topic, store.deserialize_cdr(raw, connection.msgtype), log_ns
                )
        return recording

    def _take(self, topic: str, msg, log_ns: int) -> None:
        if topic == TOPICS["detections"]:
            self.detections[stamp_ns(msg.header)] = (detection_array_to_detections(msg), log_ns)
        elif topic == TOPICS["selection"]:
            selection = msg_to_selection(msg)
            self.selections[selection.stamp_ns] = selection
        elif topic == TOPICS["energy"]:
            record = msg_to_energy_record(msg)
            self.energy[record.stamp_ns] = record
        elif topic == TOPICS["truth"]:
            self.truth[stamp_ns(msg.header)] = detection_array_to_detections(msg)
        elif topic == TOPICS["odometry"]:
            self.odometry.append(odometry_to_estimate(msg))
        elif topic == TOPICS["truth_odometry"]:
            self.truth_odometry.append(odometry_to_estimate(msg))
        else:
            situation = msg.faults[0] if len(msg.faults) else msg.context
            self.contexts.append((stamp_ns(msg.header), situation))

    def frame_stamps(self) -> list[int]:
        """One truth stamp per frame period (truth also comes at radar stamps)."""
        stamps, last = [], None
        for stamp in sorted(self.truth):
            if last is None or stamp >= last + FRAME_PERIOD_NS - MATCH_NS:
                stamps.append(stamp)
                last = stamp
        return stamps

    def situation(self, stamp: int) -> str:
        index = bisect_right(self.contexts, (stamp, "\uffff")) - 1
        return self.contexts[index][1] if index >= 0 else "unlabelled"

    def published(self, stamp: int) -> int | None:
        """The published frame of the truth frame at ``stamp``: the newest stamped in
        (stamp - a frame period + MATCH_NS, stamp + LATE_NS], as the bag reader picks a sensor's
        message for a frame. Frames keyed by another sensor than the camera (a dead
        camera hands the clock to the lidar) carry that sensor's stamps."""
        stamps = self._published_stamps
        index = bisect_right(stamps, stamp + LATE_NS) - 1
        if index >= 0 and stamps[index] > stamp - FRAME_PERIOD_NS + MATCH_NS:
            return stamps[index]
        return None

    def truth_of(self, published: int, frame_stamp: int) -> list[Detection]:
        """The truth a published frame is scored against: at its own stamp where the
        drive has one (truth comes at every camera and radar stamp), else the frame's."""
        stamps = self._truth_stamps
        index = bisect_right(stamps, published)
        near = [s for s in stamps[max(0, index - 1) : index + 1] if abs(s - published) <= MATCH_NS]
        return self.truth[near[0] if near else frame_stamp]

    def trajectories(self) -> list[tuple[Trajectory, Trajectory]]:
        """(ground truth, published odometry), when both were recorded."""
        if len(self.odometry) < 3 or not self.truth_odometry:
            return []
        truth, published = (
            Trajectory.from_estimates(sorted(poses, key=lambda pose: pose.stamp_ns))
            for poses in (self.truth_odometry, self.odometry)
        )
        return [(truth, published)]

    @cached_property
    def _published_stamps(self) -> list[int]:  # read once the recording is whole
        return sorted(self.detections)

    @cached_property
    def _truth_stamps(self) -> list[int]:
        return sorted(self.truth)


def evaluate_recording(
    bag: Path, branch_names: tuple[str, ...], odometry_policy: str
) -> tuple[Evaluation, int]:
    """The evaluation of a recording, and how many truth frames got no output;
    ``odometry_policy``: the one the nodes ran (the messages do not carry it)."""
    recording = Recording.read(bag)
    scored, facts, lost = [], [], 0
    for stamp in recording.frame_stamps():
        truth, column = recording.truth[stamp], recording.situation(stamp)
        published = recording.published(stamp)
        if published is None:
            lost += 1
            scored.append(ScoredFrame([], truth, column))
            continue
        detections, log_ns = recording.detections[published]
        scored.append(ScoredFrame(detections, recording.truth_of(published, stamp), column))
        energy = recording.energy.get(published)
        if energy is not None:  # what ran is what was spent on (a fallback has no selection)
            selection = recording.selections.get(published)
            latency_ms = (log_ns - published) / 1e6
            corrections = tuple(
                name.removeprefix(ODOMETRY_COMPONENT)
                for name in energy.component_energy_j
                if name.startswith(ODOMETRY_COMPONENT)
            )
            facts.append(
                FrameFacts(
                    tuple(energy.branch_energy_j),
                    energy,
                    latency_ms,
                    selection is None,
                    corrections,
                )
            )
    last = recording.selections[max(recording.selections)] if recording.selections else None
    evaluation = summarise(
        scored,
        facts,
        policy=last.policy if last else "unknown",
        budget_j=(last.budget_j or None) if last else None,
        branch_names=branch_names,
        odometry_policy=odometry_policy,
        trajectories=recording.trajectories(),
    )
    return evaluation, lost
