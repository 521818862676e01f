"""`dynfusion train detector|gate`: the subcommands, and the validation split they share."""

from __future__ import annotations

import argparse
from pathlib import Path

from dynfusion_ros.command_args import (
    UsageError,
    add_bags_argument,
    add_params_argument,
)
from dynfusion_ros.train.detector_command import add_detector_arguments, run_detector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="WHAT", required=True)
    add_detector_arguments(targets)
    _gate_arguments(targets)


def _gate_arguments(targets) -> None:
    gate = targets.add_parser(
        "gate",
        help="train the gate's quality predictor on labelled bags",
        description="Run the detector in every configuration on labelled bags, score each "
        "per frame, and fit the gate (writes <out>/gate.json + gate.safetensors and "
        "gate_training.json).",
    )
    add_bags_argument(gate, "data/sim/train")
    gate.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    gate.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="record one frame in N (default 1: the blend's replay then predicts tracks from"
        " what the replayed policy ran the frame before, as live)",
    )
    gate.add_argument(
        "--record",
        type=Path,
        default=Path("data/records/gate_train.npz"),
        help="cache of the detector's outputs (reused when it covers the same bags)",
    )
    gate.add_argument("--model", type=Path, help="detector weights JSON (default: shipped)")
    gate.add_argument("--profile", type=Path, help="energy profile (default: shipped)")
    gate.add_argument("--steps", type=int, default=3000, help="optimiser steps (default 3000)")
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params_argument(gate)


def run(args: argparse.Namespace) -> int:
    if args.target == "detector":
        return run_detector(args)
    from dynfusion_ros.train.gate_command import run_gate

    return run_gate(args)


def split_validation(data, block: int = 20, every: int = 10):
    """Hold out one block of ``block`` consecutive frames in every ``every`` blocks: spread
    over every bag and context, and less correlated with the training frames than a
    random pick of single frames would be."""
    import numpy as np

    position = np.arange(len(data)) // block
    held = position % every == every - 1
    if not held.any():  # a short run: hold out its last tenth
        held[-max(1, len(data) // 10) :] = True
    if held.all():
        raise UsageError(f"only {len(data)} frame(s): too few to train and validate")
    return data.subset(np.flatnonzero(~held)), data.subset(np.flatnonzero(held))
