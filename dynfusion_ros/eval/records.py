"""Every configuration's detections on every frame of labelled bags, recorded once.

Training the gate needs, per frame, its context features and the true quality of every
configuration; the benchmark replays dozens of policy and budget settings over the same
frames. Both read this record instead of running the network again each time: the
network is deterministic, so a replay through ``RecordedRunner`` gives the pipeline the
very detections it would have computed. Reuse is recorded as the gate allows it, from
the previous frame's full-level features, which every recorded frame computes.

Saved as one ``.npz`` of plain arrays (no pickle): detections as rows of
``frame, configuration, class, score, x, y, z, length, width, height, yaw``.
"""

from __future__ import annotations

import dataclasses
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
    Configuration,
    all_configurations,
)
from dynfusion_ros.core.detector.runner import DetectorOutputs, DetectorRunner
from dynfusion_ros.core.quality import frame_quality
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

RECORD_FORMAT = 2


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
    configurations = all_configurations()
    columns: dict[str, list] = {k: [] for k in ("bags", "stamps", "situations", "features")}
    quality, ran, detections, truth = [], [], [], []
    for bag in bags:
        estimator, poses = ContextEstimator(), TruePoses(Path(bag))
        runner.reset()
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
                runner.run(labelled.frame, FULL_CONFIGURATION, pose)
                continue
            found, _ = runner.run_every(labelled.frame, configurations, pose)
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
        fingerprint(values),
    )


class RecordFrames:
    """A record's frames as the metrics read them, each frame's detections and truth
    built once: the gate's fit and the benchmark score many choices over the same frames."""

    def __init__(self, record: DetectionRecord) -> None:
        self.record = record
        self._found: dict[int, dict[str, list[Detection]]] = {}
        self._truth: dict[int, list[Detection]] = {}

    def detections(self, frame: int, configuration: Configuration) -> list[Detection]:
        """What the configuration found; nothing where it could not run (its misses count)."""
        if frame not in self._found:
            self._found[frame] = self.record.frame_detections(frame)
        return self._found[frame].get(configuration.text, [])

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
    """Stands in for ``DetectorRunner`` on recorded frames: frame ``i`` has stamp ``i``."""

    def __init__(self, record: DetectionRecord) -> None:
        self.record = record

    def reset(self) -> None:
        """Nothing to forget: the record holds every frame's outputs."""

    def run(
        self, frame: SensorFrame, configuration: Configuration, _pose: np.ndarray | None = None
    ) -> DetectorOutputs:
        found = self.record.frame_detections(frame.stamp_ns)
        if configuration.text not in found:
            why = "did not run on this recorded frame"
            return DetectorOutputs(skipped={name: why for name in configuration.names})
        return DetectorOutputs(found[configuration.text], configuration)

    def run_every(
        self, frame: SensorFrame, configurations, _pose: np.ndarray | None = None
    ) -> tuple[dict[str, list[Detection]], dict[str, str]]:
        found = self.record.frame_detections(frame.stamp_ns)
        return {c.text: found[c.text] for c in configurations if c.text in found}, {}

    def features(self, frame: SensorFrame) -> ContextFeatures:
        return ContextFeatures(frame.stamp_ns, self.record.features[frame.stamp_ns])

    def quality(self, frame: SensorFrame, *_) -> np.ndarray:
        return self.record.quality[frame.stamp_ns]

    def frames(self) -> list[SensorFrame]:
        """Placeholder frames keyed by record index (the data itself is not recorded)."""
        return [SensorFrame(stamp_ns=index) for index in range(len(self.record))]
