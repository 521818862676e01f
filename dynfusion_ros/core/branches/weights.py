"""Saving and loading branch weights: safetensors (no pickle, no code runs on load) plus
a JSON file with the config and the branch table they were trained with.

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

from dynfusion_ros.core.branches.config import FORMAT_VERSION, DetectorConfig
from dynfusion_ros.core.branches.network import BranchNetwork
from dynfusion_ros.core.branches.registry import BRANCHES


class WeightsError(RuntimeError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def _branch_table() -> dict:
    return {
        name: {"stems": list(s.stem_names), "head_width": s.head_width}
        for name, s in BRANCHES.items()
    }


def save_weights(
    network: BranchNetwork, config_path: Path, metadata: Mapping | None = None
) -> Path:
    """Write ``<name>.json`` and ``<name>.safetensors`` beside it; returns the JSON path."""
    config_path = Path(config_path)
    weights_path = config_path.with_suffix(".safetensors")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(weights_path))
    document = {
        "format": "dynfusion_ros branch network",
        "weights": weights_path.name,
        "config": network.config.to_mapping(),
        "branches": _branch_table(),
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


def read_config(config_path: Path) -> tuple[DetectorConfig, dict]:
    """The config of a weights JSON, checked against this code's branch table and config."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise WeightsError(config_path, "no such file (train with `dynfusion train branches`)")
    try:
        document = json.loads(config_path.read_text())
        saved_config = document["config"]
        saved_branches = document["branches"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(config_path, f"not a branch-network config: {error!r}") from None
    mismatch = _differences(saved_branches, _branch_table(), "branches.")
    try:
        config = DetectorConfig.from_mapping(saved_config)
    except (ValueError, TypeError) as error:
        raise WeightsError(config_path, f"config does not match the code: {error}") from None
    if config.version != FORMAT_VERSION:
        mismatch.append(f"config.version: file has {config.version}, code reads {FORMAT_VERSION}")
    if mismatch:
        raise WeightsError(config_path, "config does not match the code: " + "; ".join(mismatch))
    return config, document


def load_network(config_path: Path, device: str = "cpu") -> BranchNetwork:
    """A ready-to-run network (eval mode) from a weights JSON and its safetensors file."""
    config_path = Path(config_path)
    config, document = read_config(config_path)
    weights_path = config_path.parent / str(document.get("weights", ""))
    if not weights_path.is_file():
        raise WeightsError(weights_path, f"weights file named by {config_path} does not exist")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(weights_path, f"cannot read safetensors ({error}); truncated?") from None
    network = BranchNetwork(config)
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
