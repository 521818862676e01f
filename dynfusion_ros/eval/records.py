"""Every branch's output on every frame of labelled bags, recorded once.

Training the gate needs, per frame, its context features and the true quality of every
candidate selection; the benchmark replays dozens of policy and budget settings over the
same frames. Both read this record instead of running the network again each time: the
network is deterministic, so a replay through ``RecordedRunner`` gives the pipeline the
very detections it would have computed.

Saved as one ``.npz`` of plain arrays (no pickle): detections as rows of
``frame, branch, class, score, x, y, z, length, width, height, yaw``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynfusion_ros.core.branches.registry import branch
from dynfusion_ros.core.branches.runner import BranchOutputs, BranchRunner
from dynfusion_ros.core.calibration import ScoreCalibration, scoring_name
from dynfusion_ros.core.context import (
    FEATURE_NAMES,
    SENSOR_FEATURES,
    ContextEstimator,
    ContextFeatures,
)
from dynfusion_ros.core.gate import all_selections
from dynfusion_ros.core.quality import selection_qualities
from dynfusion_ros.core.types import Box3D, Detection, Modality, ObjectClass, SensorFrame
from dynfusion_ros.eval.branch_report import situation
from dynfusion_ros.ros.bag_frames import bag_duration_frames, read_frames
from dynfusion_ros.ros.sensor_params import fingerprint

RECORD_FORMAT = 1


def _rows(frame: int, branch: int, detections: Sequence[Detection]) -> np.ndarray:
    return np.array(
        [[frame, branch, int(d.object_class), d.score, *d.box.as_array()] for d in detections]
    ).reshape(-1, 11)


def _detections(rows: np.ndarray) -> list[Detection]:
    return [Detection(ObjectClass(int(r[2])), float(r[3]), Box3D(*map(float, r[4:]))) for r in rows]


@dataclass
class BranchRecord:
    """Parallel per-frame arrays, plus detection rows indexed by frame."""

    branch_names: tuple[str, ...]
    selections: tuple[tuple[str, ...], ...]
    bags: np.ndarray  # (F,) which bag each frame came from
    stamps: np.ndarray  # (F,) ns
    situations: np.ndarray  # (F,) context, or the active fault
    features: np.ndarray  # (F, D)
    quality: np.ndarray  # (F, S): true per-frame quality of every selection
    detections: np.ndarray  # (M, 11), sorted by frame
    truth: np.ndarray  # (T, 11) the same layout, branch -1
    scoring: str = "uncalibrated"  # how fused scores were computed for ``quality``
    sensor_params: str = ""  # how the bags were read (``sensor_params.fingerprint``)

    def __len__(self) -> int:
        return len(self.stamps)

    def _span(self, rows: np.ndarray, frame: int) -> np.ndarray:
        lo, hi = np.searchsorted(rows[:, 0], [frame, frame + 1])
        return rows[lo:hi]

    def frame_detections(self, frame: int) -> dict[str, list[Detection]]:
        rows = self._span(self.detections, frame)
        return {
            name: _detections(rows[rows[:, 1] == index])
            for index, name in enumerate(self.branch_names)
        }

    def frame_truth(self, frame: int) -> list[Detection]:
        return _detections(self._span(self.truth, frame))

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            format=np.array(RECORD_FORMAT),
            feature_names=np.array(FEATURE_NAMES),
            branch_names=np.array(self.branch_names),
            selections=np.array(["+".join(s) for s in self.selections]),
            bags=self.bags,
            stamps=self.stamps,
            situations=self.situations,
            features=self.features,
            quality=self.quality,
            detections=self.detections,
            truth=self.truth,
            scoring=np.array(self.scoring),
            sensor_params=np.array(self.sensor_params),
        )

    @classmethod
    def load(cls, path: Path) -> BranchRecord:
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
                    tuple(str(n) for n in data["branch_names"]),
                    tuple(tuple(str(s).split("+")) for s in data["selections"]),
                    *(data[key] for key in ("bags", "stamps", "situations", "features")),
                    data["quality"],
                    data["detections"],
                    data["truth"],
                    str(data["scoring"]),
                    str(data["sensor_params"]) if "sensor_params" in data.files else "",
                )
        except (KeyError, OSError, ValueError) as error:
            raise ValueError(
                f"{path}: not a branch record of this version ({error}); delete it to re-record"
            ) from None


def cached_record(
    path: Path, bags: Sequence[Path], values: dict | None = None
) -> BranchRecord | None:
    """The record saved at ``path`` when it covers exactly these bags, read with these
    sensor parameters, else None."""
    if not Path(path).exists():
        return None
    record = BranchRecord.load(path)
    same_bags = set(record.bags.tolist()) == {Path(b).name for b in bags}
    return record if same_bags and record.sensor_params == fingerprint(values) else None


_scoring: dict = {}  # a worker's record and calibration, sent once per process


def _share(record: BranchRecord, calibration: ScoreCalibration | None) -> None:
    _scoring["record"], _scoring["calibration"] = record, calibration


def _qualities(frames: np.ndarray) -> np.ndarray:
    record, calibration = _scoring["record"], _scoring["calibration"]
    return np.array(
        [
            selection_qualities(
                record.frame_detections(i),
                record.frame_truth(i),
                record.selections,
                calibration=calibration,
            )
            for i in frames
        ]
    ).reshape(-1, len(record.selections))


def rescored(
    record: BranchRecord, calibration: ScoreCalibration | None, *, processes: int = 2
) -> BranchRecord:
    """The record with every selection's quality recomputed under ``calibration`` (the
    quality depends on how fused detections are scored), on ``processes`` cores."""
    chunks = np.array_split(np.arange(len(record)), max(1, processes * 4))
    if processes > 1:
        initargs = (record, calibration)
        with ProcessPoolExecutor(processes, initializer=_share, initargs=initargs) as pool:
            parts = list(pool.map(_qualities, chunks))
    else:
        _share(record, calibration)
        parts = [_qualities(chunk) for chunk in chunks]
    return dataclasses.replace(
        record, quality=np.concatenate(parts), scoring=scoring_name(calibration)
    )


def without_sensor(record: BranchRecord, sensor: Modality) -> BranchRecord:
    """The record as if ``sensor`` had failed on every frame: its features missing, its
    availability flag down, and every branch that reads it silent. The qualities are left
    as recorded, so the oracle cannot be replayed on the result."""
    features = record.features.copy()
    for name in SENSOR_FEATURES[sensor]:
        features[:, FEATURE_NAMES.index(name)] = np.nan
    features[:, FEATURE_NAMES.index(f"{sensor.value}_available")] = 0.0
    features[:, FEATURE_NAMES.index(f"{sensor.value}_age")] = 0.0
    silent = [i for i, name in enumerate(record.branch_names) if sensor in branch(name).stems]
    kept = ~np.isin(record.detections[:, 1], silent)
    return dataclasses.replace(
        record,
        features=features,
        detections=record.detections[kept],
        scoring=f"{record.scoring}, {sensor.value} failed",
    )


def record_branches(
    runner: BranchRunner,
    bags: Sequence[Path],
    *,
    every: int = 1,
    calibration: ScoreCalibration | None = None,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = None,
    values: dict | None = None,
) -> BranchRecord:
    """Run every branch on every ``every``-th frame of the bags and score every selection
    (fused scores under ``calibration``)."""
    names = runner.branch_names
    selections = all_selections(names)
    columns: dict[str, list] = {k: [] for k in ("bags", "stamps", "situations", "features")}
    quality, detections, truth = [], [], []
    for bag in bags:
        estimator = ContextEstimator()
        problems = {"on_problem": on_problem} if on_problem else {}
        frames = read_frames(Path(bag), values=values, **problems)
        total = bag_duration_frames(Path(bag), values)
        for number, labelled in enumerate(
            tqdm(frames, total=total, desc=Path(bag).name, unit="frame", disable=not progress)
        ):
            features = estimator(labelled.frame)  # every frame: it tracks image change
            if number % every or not labelled.scored:
                continue
            index = len(columns["stamps"])
            outputs = runner.run(labelled.frame, names)
            columns["bags"].append(Path(bag).name)
            columns["stamps"].append(labelled.frame.stamp_ns)
            columns["situations"].append(situation(labelled) or "unlabelled")
            columns["features"].append(features.values)
            quality.append(
                selection_qualities(
                    outputs.detections, labelled.truth, selections, calibration=calibration
                )
            )
            for branch_index, name in enumerate(names):
                detections.append(_rows(index, branch_index, outputs.detections.get(name, [])))
            truth.append(_rows(index, -1, labelled.truth))
    return BranchRecord(
        names,
        selections,
        np.array(columns["bags"]),
        np.array(columns["stamps"], dtype=np.int64),
        np.array(columns["situations"]),
        np.array(columns["features"]).reshape(-1, len(FEATURE_NAMES)),
        np.array(quality).reshape(-1, len(selections)),
        np.concatenate(detections) if detections else np.zeros((0, 11)),
        np.concatenate(truth) if truth else np.zeros((0, 11)),
        scoring_name(calibration),
        fingerprint(values),
    )


class RecordedRunner:
    """Stands in for ``BranchRunner`` on recorded frames: frame ``i`` has stamp ``i``."""

    def __init__(self, record: BranchRecord) -> None:
        self.record = record
        self.branch_names = record.branch_names

    def run(self, frame: SensorFrame, branches: Sequence[str]) -> BranchOutputs:
        found = self.record.frame_detections(frame.stamp_ns)
        return BranchOutputs(detections={n: found[n] for n in branches})

    def features(self, frame: SensorFrame) -> ContextFeatures:
        return ContextFeatures(frame.stamp_ns, self.record.features[frame.stamp_ns])

    def quality(self, frame: SensorFrame, *_) -> np.ndarray:
        return self.record.quality[frame.stamp_ns]

    def frames(self) -> list[SensorFrame]:
        """Placeholder frames keyed by record index (the data itself is not recorded)."""
        return [SensorFrame(stamp_ns=index) for index in range(len(self.record))]
