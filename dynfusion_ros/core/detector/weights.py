"""Saving and loading the detector: safetensors (no pickle, no code runs on load) plus a
JSON file with the config and the level table it was trained with.

Every failure is a ``WeightsError`` naming the file and what is wrong with it, because a
node that cannot load its model should say so in one line at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dynfusion_ros.core.detector.config import FORMAT_VERSION, DetectorConfig
from dynfusion_ros.core.detector.levels import STEM_LEVELS
from dynfusion_ros.core.detector.network import FusedDetector

DETECTOR_FORMAT = "dynfusion_ros fused detector"


class WeightsError(RuntimeError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def _level_table() -> dict:
    return {stem.value: list(levels) for stem, levels in STEM_LEVELS.items()}


def save_detector(
    network: FusedDetector, config_path: Path, metadata: Mapping | None = None
) -> Path:
    """Write ``<name>.json`` and ``<name>.safetensors`` beside it; returns the JSON path."""
    return save_network(network, config_path, DETECTOR_FORMAT, {"levels": _level_table()}, metadata)


def save_network(
    network: nn.Module, config_path: Path, kind: str, tables: Mapping, metadata: Mapping | None
) -> Path:
    config_path = Path(config_path)
    weights_path = config_path.with_suffix(".safetensors")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(weights_path))
    document = {
        "format": kind,
        "weights": weights_path.name,
        "config": network.config.to_mapping(),
        **tables,
        "metadata": dict(metadata or {}),
    }
    config_path.write_text(json.dumps(document, indent=2) + "\n")
    return config_path


def _differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if key not in current:
            found.append(f"{name} is in the file but not in this code")
        elif key not in saved:
            found.append(f"{name} is in this code but not in the file")
        elif isinstance(saved[key], Mapping) and isinstance(current[key], Mapping):
            found += _differences(saved[key], current[key], f"{name}.")
        elif saved[key] != current[key]:
            found.append(f"{name}: file has {saved[key]!r}, code expects {current[key]!r}")
    return found


def read_network_config(
    config_path: Path, tables: Mapping[str, Mapping], how_to_train: str
) -> tuple[DetectorConfig, dict]:
    """The config of a weights JSON, checked against this code's tables and config."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise WeightsError(config_path, f"no such file (train with `{how_to_train}`)")
    try:
        document = json.loads(config_path.read_text())
        saved_config = document["config"]
        mismatch = []
        for name, table in tables.items():
            mismatch += _differences(document[name], table, f"{name}.")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(config_path, f"not a network config: {error!r}") from None
    try:
        config = DetectorConfig.from_mapping(saved_config)
    except (ValueError, TypeError) as error:
        raise WeightsError(config_path, f"config does not match the code: {error}") from None
    if config.version != FORMAT_VERSION:
        mismatch.append(f"config.version: file has {config.version}, code reads {FORMAT_VERSION}")
    if mismatch:
        raise WeightsError(config_path, "config does not match the code: " + "; ".join(mismatch))
    return config, document


def load_state(network: nn.Module, config_path: Path, document: Mapping, device: str) -> nn.Module:
    """``network`` with the tensors of the safetensors file a weights JSON names, checked
    name by name and shape by shape; ready to run (eval mode) on ``device``."""
    weights_path = Path(config_path).parent / str(document.get("weights", ""))
    if not weights_path.is_file():
        raise WeightsError(weights_path, f"weights file named by {config_path} does not exist")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(weights_path, f"cannot read safetensors ({error}); truncated?") from None
    expected = network.state_dict()
    problems = [f"missing tensor {k}" for k in expected if k not in state]
    problems += [f"unexpected tensor {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} in file, {tuple(v.shape)} in code"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise WeightsError(weights_path, f"tensors do not match the network: {shown}")
    network.load_state_dict(state)
    return network.to(torch.device(device)).eval()


def load_detector(config_path: Path, device: str = "cpu") -> FusedDetector:
    """A ready-to-run detector from a weights JSON and its safetensors file."""
    config, document = read_network_config(
        config_path, {"levels": _level_table()}, "dynfusion train detector"
    )
    return load_state(FusedDetector(config), config_path, document, device)
