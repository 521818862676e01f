"""Modality stems and detection branches: registry, network, inputs, weights, inference."""

from dynfusion_ros.core.branches.registry import BRANCHES, STEMS, BranchSpec, branch, stems_for
from dynfusion_ros.core.branches.runner import BranchOutputs, BranchRunner
from dynfusion_ros.core.branches.weights import WeightsError, load_network, save_weights
from dynfusion_ros.core.detector.config import DetectorConfig

__all__ = [
    "BRANCHES",
    "STEMS",
    "BranchOutputs",
    "BranchRunner",
    "BranchSpec",
    "DetectorConfig",
    "WeightsError",
    "branch",
    "load_network",
    "save_weights",
    "stems_for",
]
