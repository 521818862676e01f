"""Saving and loading branch weights: safetensors (no pickle, no code runs on load) plus
a JSON file with the config and the branch table they were trained with.

Every failure is a ``WeightsError`` naming the file and what is wrong with it, because a
node that cannot load its model should say so in one line at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dynfusion_ros.core.branches.network import BranchNetwork
from dynfusion_ros.core.branches.registry import BRANCHES
from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.weights import (
    WeightsError,
    load_state,
    read_network_config,
    save_network,
)

__all__ = ["WeightsError", "load_network", "read_config", "save_weights"]


def _branch_table() -> dict:
    return {
        name: {"stems": list(s.stem_names), "head_width": s.head_width}
        for name, s in BRANCHES.items()
    }


def save_weights(
    network: BranchNetwork, config_path: Path, metadata: Mapping | None = None
) -> Path:
    """Write ``<name>.json`` and ``<name>.safetensors`` beside it; returns the JSON path."""
    tables = {"branches": _branch_table()}
    return save_network(network, config_path, "dynfusion_ros branch network", tables, metadata)


def read_config(config_path: Path) -> tuple[DetectorConfig, dict]:
    """The config of a weights JSON, checked against this code's branch table and config."""
    tables = {"branches": _branch_table()}
    return read_network_config(config_path, tables, "dynfusion train branches")


def load_network(config_path: Path, device: str = "cpu") -> BranchNetwork:
    """A ready-to-run network (eval mode) from a weights JSON and its safetensors file."""
    config, document = read_config(config_path)
    return load_state(BranchNetwork(config), config_path, document, device)
