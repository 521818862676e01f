"""Evaluate what the nodes *published*: a rosbag2 recorded from their topics, scored
against the ground truth replayed beside them.

Published frames are paired with the ground truth by the offline reader's rule
(``ros.truth_frames``); a truth frame the nodes published nothing for counts with no
detections, so lost frames cost accuracy here exactly as they would on the road. The
summary is the one `dynfusion evaluate` prints, from the messages: option usage from
/dynfusion/selection, energy and the odometry corrections that ran from
/dynfusion/energy, latency from each detection array's log time (the recorder's clock)
minus its stamp, and the odometry from /dynfusion/odometry against
/ground_truth/odometry.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
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
from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS
from dynfusion_ros.ros.truth_frames import TruthFrames
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

    def paired(self) -> tuple[list[tuple[int, list[Detection]]], list[tuple[int, list[Detection]]]]:
        """(published stamp, the truth it is scored against) for each published frame a
        truth frame took, and (stamp, truth) of each truth frame none was published for:
        the offline reader's rule (``truth_frames``). Frames keyed by another sensor than
        the camera (a dead camera hands the clock to the lidar) carry its stamps."""
        missed: list[tuple[int, list[Detection]]] = []
        pairing: TruthFrames[int] = TruthFrames(
            round(SENSOR_DEFAULTS["frame_period_s"] * NS_PER_S),
            lambda stamp, truth: missed.append((stamp, truth)),
        )
        events = sorted([(t, 0) for t in self.truth] + [(t, 1) for t in self.detections])
        paired = []
        for stamp, is_frame in events:  # truth first at equal stamps
            if is_frame:
                pairing.add_frame(stamp, stamp)
            else:
                pairing.add_truth(stamp, self.truth[stamp])
            paired += pairing.settled()
        paired += pairing.settled(final=True)
        return [(stamp, truth) for stamp, truth in paired if truth is not None], missed

    def situation(self, stamp: int) -> str:
        index = bisect_right(self.contexts, (stamp, "\uffff")) - 1
        return self.contexts[index][1] if index >= 0 else "unlabelled"

    def trajectories(self) -> list[tuple[Trajectory, Trajectory]]:
        """(ground truth, published odometry), when both were recorded."""
        if len(self.odometry) < 3 or not self.truth_odometry:
            return []
        truth, published = (
            Trajectory.from_estimates(sorted(poses, key=lambda pose: pose.stamp_ns))
            for poses in (self.truth_odometry, self.odometry)
        )
        return [(truth, published)]


def evaluate_recording(bag: Path, odometry_policy: str) -> Evaluation:
    """The evaluation of a recording (``frames_without_output``: truth frames the nodes
    published nothing for); ``odometry_policy``: the one the nodes ran (the messages do
    not carry it)."""
    recording = Recording.read(bag)
    paired, missed = recording.paired()
    scored = [ScoredFrame([], truth, recording.situation(stamp)) for stamp, truth in missed]
    facts = []
    for published, truth in paired:
        detections, log_ns = recording.detections[published]
        scored.append(ScoredFrame(detections, truth, recording.situation(published)))
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
        odometry_policy=odometry_policy,
        trajectories=recording.trajectories(),
        frames_without_output=len(missed),
    )
    return evaluation
