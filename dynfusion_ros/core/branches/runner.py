"""Inference: run a chosen set of branches on one frame, each needed stem once, and say
how long every stem and head took (the energy meters and the benchmark read these)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dynfusion_ros.core.branches.network import BranchNetwork
from dynfusion_ros.core.branches.registry import branch, stems_for
from dynfusion_ros.core.branches.weights import load_network
from dynfusion_ros.core.detector.boxes import decode
from dynfusion_ros.core.detector.inputs import LiftCache, stem_input
from dynfusion_ros.core.detector.rasters import blank_inputs
from dynfusion_ros.core.types import Detection, Modality, SensorFrame


@dataclass
class BranchOutputs:
    """Per branch that ran, its detections; per branch that could not, the reason.
    Times in milliseconds: a stem's includes rasterising its input."""

    detections: dict[str, list[Detection]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stem_ms: dict[str, float] = field(default_factory=dict)
    head_ms: dict[str, float] = field(default_factory=dict)


class BranchRunner:
    def __init__(self, network: BranchNetwork, *, score_threshold: float = 0.05) -> None:
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        self.network = network.eval()
        self.config = network.config
        self.score_threshold = score_threshold
        self.device = next(network.parameters()).device
        self.lifts = LiftCache(self.config)

    @classmethod
    def load(cls, config_path: Path, *, device: str = "cpu", score_threshold: float = 0.05):
        return cls(load_network(config_path, device), score_threshold=score_threshold)

    @property
    def branch_names(self) -> tuple[str, ...]:
        return tuple(self.network.specs)

    @torch.inference_mode()
    def stem_features(self, frame: SensorFrame, stem: Modality) -> torch.Tensor | str:
        """One stem's BEV features for this frame, or why it cannot run."""
        prepared = stem_input(frame, stem, self.config, self.lifts)
        if prepared.unavailable:
            return "; ".join(prepared.unavailable.values())
        tensors = {
            key: torch.from_numpy(value)[None].to(self.device)
            for key, value in prepared.arrays.items()
        }
        features = self.network.stem(stem.value, tensors)
        self._sync()
        return features

    @torch.inference_mode()
    def head_detections(self, name: str, features: dict[str, torch.Tensor]) -> list[Detection]:
        """One branch head over the features of its stems, decoded."""
        heatmap, boxes = self.network.head(name, features)
        return decode(heatmap[0].cpu(), boxes[0].cpu(), self.config, self.score_threshold)

    def run(self, frame: SensorFrame, branches: Iterable[str]) -> BranchOutputs:
        names = [branch(name).name for name in branches]
        outputs = BranchOutputs()
        features: dict[str, torch.Tensor] = {}
        missing: dict[str, str] = {}
        for stem in stems_for(names):
            start = time.perf_counter()
            result = self.stem_features(frame, stem)
            if isinstance(result, str):
                missing[stem.value] = result
                continue
            features[stem.value] = result
            outputs.stem_ms[stem.value] = (time.perf_counter() - start) * 1e3
        for name in names:
            lacking = [stem for stem in branch(name).stem_names if stem not in features]
            if lacking:
                outputs.skipped[name] = "; ".join(missing[stem] for stem in lacking)
                continue
            start = time.perf_counter()
            outputs.detections[name] = self.head_detections(name, features)
            outputs.head_ms[name] = (time.perf_counter() - start) * 1e3
        return outputs

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Run every stem and head once on blank inputs. The first call at each layer
        shape is slow (cuDNN and oneDNN choose their kernels, the allocator grows): a node
        pays it here, at start-up, rather than on the first frames of a drive."""
        inputs = {
            key: torch.from_numpy(value)[None].to(self.device)
            for key, value in blank_inputs(self.config).items()
        }
        features = {stem: self.network.stem(stem, inputs) for stem in self.config.stem_channels}
        for name in self.branch_names:
            self.network.head(name, features)
        self._sync()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
