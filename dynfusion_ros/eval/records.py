"""Every configuration's detections on every frame of labelled bags, recorded once.

Training the gate needs, per frame, its context features and the true quality of every
configuration; the benchmark replays dozens of policy and budget settings over the same
frames. Both read this record instead of running the network again each time: the
network is deterministic, so a replay through ``RecordedRunner`` gives the pipeline the
very detections it would have computed. Reuse is recorded as the gate allows it, from
the previous frame's full-level features, which every recorded frame computes. Tracks are
recorded as predicted from the full configuration's detections one frame back (and, for
the gate's hold penalty, further back); a replay predicts them again from what the
replayed policy ran, with the recorded true poses.

Saved as one ``.npz`` of plain arrays (no pickle): detections as rows of
``frame, configuration, class, score, x, y, z, length, width, height, yaw``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros.core.context import (
    FEATURE_NAMES,
    SENSOR_FEATURES,
    ContextEstimator,
    ContextFeatures,
)
from dynfusion_ros.core.detector.levels import (
    FULL_CONFIGURATION,
    TRACKS,
    Configuration,
    choices,
)
from dynfusion_ros.core.detector.runner import DetectorOutputs, DetectorRunner
from dynfusion_ros.core.gate import MAX_HELD_FRAMES
from dynfusion_ros.core.quality import frame_quality
from dynfusion_ros.core.tracking import ObjectTracks
from dynfusion_ros.core.types import Box3D, Detection, Modality, ObjectClass, SensorFrame
from dynfusion_ros.eval.detection_metrics import (
    DetectionMetrics,
    ScoredFrame,
    evaluate_per_context,
)
from dynfusion_ros.eval.detector_report import situation
from dynfusion_ros.eval.trajectory import TruePoses
from dynfusion_ros.ros.bag_frames import bag_duration_frames, read_frames
from dynfusion_ros.ros.sensor_params import fingerprint

RECORD_FORMAT = 3
FULL = FULL_CONFIGURATION.text


def _rows(frame: int, configuration: int, detections: Sequence[Detection]) -> np.ndarray:
    return np.array(
        [
            [frame, configuration, int(d.object_class), d.score, *d.box.as_array()]
            for d in detections
        ]
    ).reshape(-1, 11)


def _detections(rows: np.ndarray) -> list[Detection]:
    return [Detection(ObjectClass(int(r[2])), float(r[3]), Box3D(*map(float, r[4:]))) for r in rows]


@dataclass
class DetectionRecord:
    """Parallel per-frame arrays, plus detection rows indexed by frame. A configuration
    that could not run on a frame (a sensor silent, nothing to reuse) has no rows there
    and is named in ``ran`` as not having run."""

    configurations: tuple[Configuration, ...]
    bags: np.ndarray  # (F,) which bag each frame came from
    stamps: np.ndarray  # (F,) ns
    situations: np.ndarray  # (F,) context, or the active fault
    features: np.ndarray  # (F, D)
    quality: np.ndarray  # (F, C): true per-frame quality of every configuration
    ran: np.ndarray  # (F, C) bool: the configuration could run on the frame
    detections: np.ndarray  # (M, 11), sorted by frame
    truth: np.ndarray  # (T, 11) the same layout, configuration -1
    poses: np.ndarray  # (F, 3) true (x, y, yaw) of base_link in odom; NaN where unknown
    # (F, MAX_HELD_FRAMES): the quality of tracks predicted 1, 2, ... frames on from the
    # full configuration's detections
    held_quality: np.ndarray
    sensor_params: str = ""  # how the bags were read (``sensor_params.fingerprint``)

    def __len__(self) -> int:
        return len(self.stamps)

    def _span(self, rows: np.ndarray, frame: int) -> np.ndarray:
        lo, hi = np.searchsorted(rows[:, 0], [frame, frame + 1])
        return rows[lo:hi]

    def frame_detections(self, frame: int) -> dict[str, list[Detection]]:
        """Detections by configuration text, of the configurations that ran."""
        rows = self._span(self.detections, frame)
        return {
            c.text: _detections(rows[rows[:, 1] == index])
            for index, c in enumerate(self.configurations)
            if self.ran[frame, index]
        }

    def frame_truth(self, frame: int) -> list[Detection]:
        return _detections(self._span(self.truth, frame))

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            format=np.array(RECORD_FORMAT),
            feature_names=np.array(FEATURE_NAMES),
            configurations=np.array([c.text for c in self.configurations]),
            bags=self.bags,
            stamps=self.stamps,
            situations=self.situations,
            features=self.features,
            quality=self.quality,
            ran=self.ran,
            detections=self.detections,
            truth=self.truth,
            poses=self.poses,
            held_quality=self.held_quality,
            sensor_params=np.array(self.sensor_params),
        )

    @classmethod
    def load(cls, path: Path) -> DetectionRecord:
        """A saved record; one from another version or a damaged file is a ValueError
        saying to delete it (it is a cache: it will be recorded again)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if (
                    int(data["format"]) != RECORD_FORMAT
                    or tuple(data["feature_names"]) != FEATURE_NAMES
                ):
                    raise KeyError("format")
                return cls(
                    tuple(Configuration.parse(str(t)) for t in data["configurations"]),
                    *(data[key] for key in ("bags", "stamps", "situations", "features")),
                    *(data[key] for key in ("quality", "ran", "detections", "truth")),
                    data["poses"],
                    data["held_quality"],
                    str(data["sensor_params"]),
                )
        except (KeyError, OSError, ValueError) as error:
            raise ValueError(
                f"{path}: not a detection record of this version ({error}); delete it to re-record"
            ) from None


def cached_record(
    path: Path, bags: Sequence[Path], values: dict | None = None
) -> DetectionRecord | None:
    """The record saved at ``path`` when it covers exactly these bags, read with these
    sensor parameters, else None."""
    if not Path(path).exists():
        return None
    record = DetectionRecord.load(path)
    same_bags = set(record.bags.tolist()) == {Path(b).name for b in bags}
    return record if same_bags and record.sensor_params == fingerprint(values) else None


def without_sensor(record: DetectionRecord, sensor: Modality) -> DetectionRecord:
    """The record as if ``sensor`` had failed on every frame: its features missing, its
    availability flag down, and every configuration with its stem silent (reuse too:
    a stem that never ran has nothing to reuse). The qualities are left as recorded, so
    the oracle cannot be replayed on the result."""
    features = record.features.copy()
    for name in SENSOR_FEATURES[sensor]:
        features[:, FEATURE_NAMES.index(name)] = np.nan
    features[:, FEATURE_NAMES.index(f"{sensor.value}_available")] = 0.0
    features[:, FEATURE_NAMES.index(f"{sensor.value}_age")] = 0.0
    silent = [i for i, c in enumerate(record.configurations) if sensor in c.stems]
    ran = record.ran.copy()
    ran[:, silent] = False
    kept = ~np.isin(record.detections[:, 1], silent)
    return dataclasses.replace(
        record, features=features, ran=ran, detections=record.detections[kept]
    )


def record_configurations(
    runner: DetectorRunner,
    bags: Sequence[Path],
    *,
    every: int = 1,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = None,
    values: dict | None = None,
) -> DetectionRecord:
    """Run every configuration on every ``every``-th frame of the bags and score each.
    The true pose (``/ground_truth/odometry``) moves reused features: the record is of
    the detector, not of the filter, which ``evaluate`` measures on its own."""
    configurations = choices()
    columns: dict[str, list] = {k: [] for k in ("bags", "stamps", "situations", "features")}
    quality, ran, detections, truth, held, kept_poses = [], [], [], [], [], []
    for bag in bags:
        estimator, poses = ContextEstimator(), TruePoses(Path(bag))
        runner.reset()
        earlier: deque[ObjectTracks] = deque(maxlen=MAX_HELD_FRAMES)
        problems = {"on_problem": on_problem} if on_problem else {}
        frames = read_frames(Path(bag), values=values, **problems)
        total = bag_duration_frames(Path(bag), values)
        for number, labelled in enumerate(
            tqdm(frames, total=total, desc=Path(bag).name, unit="frame", disable=not progress)
        ):
            features = estimator(labelled.frame)  # every frame: it tracks image change
            pose = poses.known(labelled.frame.stamp_ns)
            if number % every or not labelled.scored:
                # not kept: the full configuration only, whose features the next reuses
                found = {FULL: runner.run(labelled.frame, FULL_CONFIGURATION, pose).detections}
            else:
                found, _ = runner.run_every(labelled.frame, configurations, pose)
                held.append(_held_quality(earlier, labelled, pose))
            runner.follow(labelled.frame, found.get(FULL, []), pose)
            earlier.appendleft(copy.deepcopy(runner.tracks))
            if number % every or not labelled.scored:
                continue
            kept_poses.append(np.full(3, np.nan) if pose is None else pose)
            index = len(columns["stamps"])
            columns["bags"].append(Path(bag).name)
            columns["stamps"].append(labelled.frame.stamp_ns)
            columns["situations"].append(situation(labelled) or "unlabelled")
            columns["features"].append(features.values)
            quality.append(
                [
                    frame_quality(found[c.text], labelled.truth) if c.text in found else 0.0
                    for c in configurations
                ]
            )
            ran.append([c.text in found for c in configurations])
            for column, configuration in enumerate(configurations):
                detections.append(_rows(index, column, found.get(configuration.text, [])))
            truth.append(_rows(index, -1, labelled.truth))
    count = len(configurations)
    return DetectionRecord(
        configurations,
        np.array(columns["bags"]),
        np.array(columns["stamps"], dtype=np.int64),
        np.array(columns["situations"]),
        np.array(columns["features"]).reshape(-1, len(FEATURE_NAMES)),
        np.array(quality).reshape(-1, count),
        np.array(ran, dtype=bool).reshape(-1, count),
        np.concatenate(detections) if detections else np.zeros((0, 11)),
        np.concatenate(truth) if truth else np.zeros((0, 11)),
        np.array(kept_poses).reshape(-1, 3),
        np.array(held).reshape(-1, MAX_HELD_FRAMES),
        fingerprint(values),
    )


def _held_quality(earlier: deque[ObjectTracks], labelled, pose: np.ndarray | None) -> list[float]:
    """The quality of tracks predicted to this frame from the full configuration's
    detections 1, 2, ... frames back; 0 where there are none to predict (as for a
    configuration that could not run)."""
    qualities = []
    for back in range(MAX_HELD_FRAMES):
        tracks = earlier[back] if pose is not None and back < len(earlier) else None
        predicted = tracks.predict(pose, labelled.frame.stamp_ns) if tracks else "none"
        qualities.append(
            0.0 if isinstance(predicted, str) else frame_quality(predicted, labelled.truth)
        )
    return qualities


class RecordFrames:
    """A record's frames as the metrics read them, each frame's detections and truth
    built once: the gate's fit and the benchmark score many choices over the same frames."""

    def __init__(self, record: DetectionRecord) -> None:
        self.record = record
        self._found: dict[int, dict[str, list[Detection]]] = {}
        self._truth: dict[int, list[Detection]] = {}

    def frame_detections(self, frame: int) -> dict[str, list[Detection]]:
        """``DetectionRecord.frame_detections``, built once."""
        if frame not in self._found:
            self._found[frame] = self.record.frame_detections(frame)
        return self._found[frame]

    def detections(self, frame: int, configuration: Configuration) -> list[Detection]:
        """What the configuration found; nothing where it could not run (its misses count)."""
        return self.frame_detections(frame).get(configuration.text, [])

    def scored(self, frame: int, detections: list[Detection]) -> ScoredFrame:
        if frame not in self._truth:
            self._truth[frame] = self.record.frame_truth(frame)
        return ScoredFrame(detections, self._truth[frame], str(self.record.situations[frame]))

    def configuration_metrics(
        self, frames: Sequence[int]
    ) -> dict[str, dict[str, DetectionMetrics]]:
        """Every configuration on ``frames``, by context (key ``all``: every frame)."""
        return {
            c.text: evaluate_per_context([self.scored(f, self.detections(f, c)) for f in frames])
            for c in self.record.configurations
        }


class RecordedRunner:
    """Stands in for ``DetectorRunner`` on recorded frames: frame ``i`` has stamp ``i``.
    Tracks are predicted live, from what the replayed policy ran, with the recorded true
    poses and stamps: what they predict depends on the policy's own history."""

    def __init__(
        self,
        record: DetectionRecord,
        found: Callable[[int], dict[str, list[Detection]]] | None = None,
    ) -> None:
        """``found``: a frame's detections by configuration (default: built from the
        record on every call; ``RecordFrames.frame_detections`` keeps them)."""
        self.record = record
        self.found = found or record.frame_detections
        self.tracks = ObjectTracks()

    def reset(self) -> None:
        """Forget the tracks; the record holds every frame's other outputs."""
        self.tracks.reset()

    def _pose(self, frame: SensorFrame) -> np.ndarray | None:
        pose = self.record.poses[frame.stamp_ns]
        return None if np.isnan(pose).any() else pose

    def _predicted(self, frame: SensorFrame) -> list[Detection] | str:
        pose = self._pose(frame)
        if pose is None:
            return "no ego pose to move the tracks by"
        return self.tracks.predict(pose, int(self.record.stamps[frame.stamp_ns]))

    def run(
        self, frame: SensorFrame, configuration: Configuration, _pose: np.ndarray | None = None
    ) -> DetectorOutputs:
        if configuration.tracks:
            predicted = self._predicted(frame)
            if isinstance(predicted, str):
                return DetectorOutputs(skipped={TRACKS: predicted})
            return DetectorOutputs(predicted, configuration)
        found = self.found(frame.stamp_ns)
        if configuration.text not in found:
            why = "did not run on this recorded frame"
            return DetectorOutputs(skipped={name: why for name in configuration.names})
        return DetectorOutputs(found[configuration.text], configuration)

    def run_every(
        self, frame: SensorFrame, configurations, _pose: np.ndarray | None = None
    ) -> tuple[dict[str, list[Detection]], dict[str, str]]:
        configurations = list(configurations)
        found = self.found(frame.stamp_ns)
        detections = {
            c.text: found[c.text] for c in configurations if c.detects and c.text in found
        }
        skipped = {}
        if any(c.tracks for c in configurations):
            predicted = self._predicted(frame)
            if isinstance(predicted, str):
                skipped[TRACKS] = predicted
            else:
                detections[TRACKS] = predicted
        return detections, skipped

    def follow(
        self, frame: SensorFrame, detections: list[Detection], _pose: np.ndarray | None = None
    ) -> None:
        pose = self._pose(frame)
        if pose is None:
            self.tracks.reset()
        else:
            self.tracks.update(detections, pose, int(self.record.stamps[frame.stamp_ns]))

    def features(self, frame: SensorFrame) -> ContextFeatures:
        return ContextFeatures(frame.stamp_ns, self.record.features[frame.stamp_ns])

    def quality(
        self, frame: SensorFrame, detections: dict[str, list[Detection]], truth: list[Detection]
    ) -> np.ndarray:
        """The recorded quality of every configuration; that of tracks, live."""
        quality = self.record.quality[frame.stamp_ns].copy()
        for column, configuration in enumerate(self.record.configurations):
            if configuration.tracks:
                found = detections.get(TRACKS)
                quality[column] = 0.0 if found is None else frame_quality(found, truth)
        return quality

    def frames(self) -> list[SensorFrame]:
        """Placeholder frames keyed by record index (the data itself is not recorded)."""
        return [SensorFrame(stamp_ns=index) for index in range(len(self.record))]
