"""Inference: run one configuration of the fused detector on a frame, each stem at its
level, reused stems from memory, and say how long every option and the head took (the
energy meters and the benchmark read these).

A stem that cannot contribute (no data, no earlier features to reuse, no ego pose to
warp them by) is left out and named in ``skipped`` with the reason; the head runs on
what remains, and on nothing it does not run at all.

The ``tracks`` configuration runs nothing: it predicts the object tracks
(``core/tracking.py``) to the frame. The caller has the tracks ``follow`` what each frame
published (the pipeline: the detections of the configuration it ran, or their late
fusion), since only the caller knows what that was.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dynfusion_ros.core.detector.boxes import decode
from dynfusion_ros.core.detector.inputs import LiftCache, stem_input
from dynfusion_ros.core.detector.levels import (
    FULL,
    REUSE,
    TRACKS,
    Configuration,
    Option,
)
from dynfusion_ros.core.detector.network import LEVELS, OFF, FusedDetector
from dynfusion_ros.core.detector.rasters import blank_inputs
from dynfusion_ros.core.detector.reuse import FeatureMemory
from dynfusion_ros.core.detector.weights import load_detector
from dynfusion_ros.core.tracking import ObjectTracks
from dynfusion_ros.core.types import Detection, SensorFrame

MAX_REUSE_AGE_S = 0.5  # reused features may be this old: the oldest the detector trained on
HEAD_BATCH = 16  # configurations the head scores in one call (run_every)
INFERENCE_THREADS = 1
"""torch's CPU threads for inference. At batch 1 the detector's layers are small: a second
thread mostly spins waiting for the first, and that spinning is CPU time, energy the
budget pays for. On a 2-core EPYC the full configuration took 13.3 ms at one thread
(13.3 ms of CPU) and 12.6 ms at two (25 ms of CPU): the same latency for half the
energy, and the other core stays free for DDS, the estimator and the odometry."""


def use_threads(threads: int) -> None:
    """Set torch's CPU threads for this process (ValueError below 1)."""
    if threads < 1:
        raise ValueError(f"the detector needs at least 1 thread, got {threads}")
    torch.set_num_threads(threads)


@dataclass
class DetectorOutputs:
    """The detections, what contributed to them and what could not (option -> reason).
    Times in milliseconds: an option's includes preparing its input (or warping)."""

    detections: list[Detection] = field(default_factory=list)
    ran: Configuration = field(default_factory=lambda: Configuration(()))
    skipped: dict[str, str] = field(default_factory=dict)
    option_ms: dict[str, float] = field(default_factory=dict)
    head_ms: float = 0.0


@dataclass
class _Slot:
    features: torch.Tensor
    level: int
    age_s: float = 0.0


class DetectorRunner:
    def __init__(
        self,
        network: FusedDetector,
        *,
        score_threshold: float = 0.05,
        max_reuse_age_s: float = MAX_REUSE_AGE_S,
    ) -> None:
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        self.network = network.eval()
        self.config = network.config
        self.score_threshold = score_threshold
        self.device = next(network.parameters()).device
        self.lifts = LiftCache(self.config)
        self.memory = FeatureMemory(self.config.grid, max_reuse_age_s)
        self.tracks = ObjectTracks(max_age_s=max_reuse_age_s)

    @classmethod
    def load(
        cls,
        config_path: Path,
        *,
        device: str = "cpu",
        score_threshold: float = 0.05,
        threads: int = INFERENCE_THREADS,
    ) -> DetectorRunner:
        """The detector saved at ``config_path``, torch set to ``threads`` CPU threads
        (process-wide: what the energy profile was measured with, ``INFERENCE_THREADS``)."""
        use_threads(threads)
        return cls(load_detector(config_path, device), score_threshold=score_threshold)

    def reset(self) -> None:
        """Forget the features kept for reuse and the object tracks (a new stream)."""
        self.memory.reset()
        self.tracks.reset()

    def predicted_tracks(
        self, frame: SensorFrame, pose: np.ndarray | None
    ) -> list[Detection] | str:
        """The tracks moved to this frame, or why there are none."""
        if pose is None:
            return "no ego pose to move the tracks by"
        return self.tracks.predict(pose, frame.stamp_ns)

    def follow(self, frame: SensorFrame, detections: list[Detection], pose) -> None:
        """The tracks take what this frame's detector run found (not to be called after
        ``tracks`` itself); without a pose (nothing to place them in odom by) they end."""
        if pose is None:
            self.tracks.reset()
        else:
            self.tracks.update(detections, pose, frame.stamp_ns)

    @torch.inference_mode()
    def stem_features(self, frame: SensorFrame, option: Option) -> torch.Tensor | str:
        """One stem's BEV features at a level that runs it, or why it cannot run."""
        prepared = stem_input(frame, option.stem, self.config, self.lifts)
        if prepared.unavailable:
            return "; ".join(prepared.unavailable.values())
        tensors = {
            key: torch.from_numpy(value)[None].to(self.device)
            for key, value in prepared.arrays.items()
        }
        features = self.network.stem(option.stem.value, tensors, option.level)
        self._sync()
        return features

    def _slot(
        self, frame: SensorFrame, option: Option, pose: np.ndarray | None, remember: bool = True
    ) -> _Slot | str:
        stem = option.stem.value
        level = LEVELS[stem].index(option.level)
        if option.level == REUSE:
            if pose is None:
                return "no ego pose to move earlier features by"
            recalled = self.memory.recall(stem, pose, frame.stamp_ns)
            if isinstance(recalled, str):
                return recalled
            return _Slot(recalled[0], level, recalled[1])
        features = self.stem_features(frame, option)
        if isinstance(features, str):
            return features
        if remember and pose is not None and option.level == FULL:
            self.memory.remember(stem, features, pose, frame.stamp_ns)
        return _Slot(features, level)

    def head_detections(self, features: Mapping[str, torch.Tensor]) -> list[Detection]:
        """The fusion, head and decoding on full-level stem features (what ``dynfusion
        profile`` prices as the head)."""
        return self._detect({stem: _Slot(values, 0) for stem, values in features.items()})

    @torch.inference_mode()
    def _detect(self, slots: Mapping[str, _Slot]) -> list[Detection]:
        return self._detect_many([slots])[0]

    @torch.inference_mode()
    def _detect_many(self, configurations: list[Mapping[str, _Slot]]) -> list[list[Detection]]:
        """The head on several sets of stem features at once, one batch row each: the
        oracle and the records score every configuration of a frame, and one batched
        call costs far less than one call per configuration."""
        found = []
        for start in range(0, len(configurations), HEAD_BATCH):
            chunk = configurations[start : start + HEAD_BATCH]
            features, levels, ages = {}, {}, {}
            for stem in LEVELS:
                rows = [slots.get(stem) for slots in chunk]
                present = [r for r in rows if r is not None]
                if not present:
                    continue
                if len(rows) == 1:  # a node's frame: no copy
                    features[stem] = present[0].features
                else:
                    blank = torch.zeros_like(present[0].features)
                    features[stem] = torch.cat([blank if r is None else r.features for r in rows])
                levels[stem] = torch.tensor([OFF if r is None else r.level for r in rows])
                ages[stem] = torch.tensor([0.0 if r is None else r.age_s for r in rows])
            heatmap, boxes = self.network.detect(features, levels, ages)
            heatmap, boxes = heatmap.cpu(), boxes.cpu()
            found += [
                decode(heatmap[row], boxes[row], self.config, self.score_threshold)
                for row in range(len(chunk))
            ]
        return found

    def run(
        self, frame: SensorFrame, configuration: Configuration, pose: np.ndarray | None = None
    ) -> DetectorOutputs:
        """The configuration on this frame. ``pose``: (x, y, yaw) of base_link in odom at
        the frame's stamp; without it nothing is remembered or reused, and no tracks are
        predicted. Only full-level features are remembered: what the gate offers reuse
        after."""
        outputs, slots, ran = DetectorOutputs(), {}, []
        if configuration.tracks:
            start = time.perf_counter()
            predicted = self.predicted_tracks(frame, pose)
            if isinstance(predicted, str):
                outputs.skipped[TRACKS] = predicted
            else:
                outputs.detections, outputs.ran = predicted, configuration
                outputs.option_ms[TRACKS] = (time.perf_counter() - start) * 1e3
            return outputs
        for option in configuration.options:
            start = time.perf_counter()
            slot = self._slot(frame, option, pose)
            if isinstance(slot, str):
                outputs.skipped[option.name] = slot
                continue
            slots[option.stem.value] = slot
            ran.append(option)
            outputs.option_ms[option.name] = (time.perf_counter() - start) * 1e3
        outputs.ran = Configuration(tuple(ran))
        if slots:
            start = time.perf_counter()
            outputs.detections = self._detect(slots)
            outputs.head_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def run_every(
        self,
        frame: SensorFrame,
        configurations: Iterable[Configuration],
        pose: np.ndarray | None = None,
    ) -> tuple[dict[str, list[Detection]], dict[str, str]]:
        """Every configuration on this frame, each option computed once (the oracle and
        the benchmark's records need them all): detections by configuration text for
        those whose every option could contribute, and why each other option could not.
        Reuse reads what the last frame remembered; this frame remembers its full-level
        features, as a frame that ran the full configuration would. ``tracks`` predicts
        the tracks as they are."""
        configurations = list(configurations)
        options = sorted({o for c in configurations for o in c.options}, key=_reuse_last)
        slots: dict[Option, _Slot] = {}
        skipped: dict[str, str] = {}
        for option in options:
            slot = self._slot(frame, option, pose, remember=False)
            if isinstance(slot, str):
                skipped[option.name] = slot
            else:
                slots[option] = slot
        for option, slot in slots.items():
            if option.level == FULL and pose is not None:
                self.memory.remember(option.stem.value, slot.features, pose, frame.stamp_ns)
        runnable = [c for c in configurations if c.detects and all(o in slots for o in c.options)]
        found = self._detect_many([{o.stem.value: slots[o] for o in c.options} for c in runnable])
        detections = {c.text: d for c, d in zip(runnable, found, strict=True)}
        if any(c.tracks for c in configurations):
            predicted = self.predicted_tracks(frame, pose)
            if isinstance(predicted, str):
                skipped[TRACKS] = predicted
            else:
                detections[TRACKS] = predicted
        return detections, skipped

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Run every stem at every level and the head once on blank inputs. The first
        call at each layer shape is slow (cuDNN and oneDNN choose their kernels, the
        allocator grows): a node pays it here, at start-up, not on a drive's first frames."""
        inputs = {
            key: torch.from_numpy(value)[None].to(self.device)
            for key, value in blank_inputs(self.config).items()
        }
        slots = {}
        for stem, levels in LEVELS.items():
            for index, level in enumerate(levels):
                if level != REUSE:
                    slots[stem] = _Slot(self.network.stem(stem, inputs, level), index)
        self._detect(slots)
        self._sync()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _reuse_last(option: Option) -> tuple[bool, str]:
    return option.level == REUSE, option.name
