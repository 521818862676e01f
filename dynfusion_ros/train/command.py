"""`dynfusion train branches|gate|detector`: arguments, validation, runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynfusion_ros.command_args import (
    UsageError,
    add_bags_argument,
    add_params_argument,
    bag_paths,
    sensor_values,
)
from dynfusion_ros.train.detector_command import add_detector_arguments, run_detector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="WHAT", required=True)
    branches = targets.add_parser(
        "branches",
        help="train every stem and branch head on labelled bags",
        description="Train the stems and branch heads on labelled (simulated) bags and write "
        "<out>/branches.json + branches.safetensors, a training log and a loss plot.",
    )
    add_bags_argument(branches, "data/sim/train")
    branches.add_argument(
        "--val",
        type=Path,
        nargs="*",
        default=[],
        metavar="BAG",
        help="validation bags (default: one block of 20 frames in every 200 training frames)",
    )
    branches.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    branches.add_argument(
        "--epochs", type=int, default=14, help="passes over the data (default 14, as shipped)"
    )
    branches.add_argument("--batch-size", type=int, default=16)
    branches.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    branches.add_argument(
        "--every",
        type=int,
        default=2,
        metavar="N",
        help="use every N-th frame (10 Hz frames are near-copies); default 2",
    )
    branches.add_argument("--seed", type=int, default=0)
    branches.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    branches.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    branches.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params_argument(branches)
    _gate_arguments(targets)
    add_detector_arguments(targets)


def _gate_arguments(targets) -> None:
    gate = targets.add_parser(
        "gate",
        help="train the gate's quality predictor on labelled bags",
        description="Run every branch on labelled bags, score every selection per frame, and "
        "fit the gate (writes <out>/gate.json + gate.safetensors and gate_training.json).",
    )
    add_bags_argument(gate, "data/sim/train")
    gate.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    gate.add_argument(
        "--every", type=int, default=2, metavar="N", help="one frame in N (default 2)"
    )
    gate.add_argument(
        "--record",
        type=Path,
        default=Path("data/records/gate_train.npz"),
        help="cache of the branch outputs (reused when it covers the same bags)",
    )
    gate.add_argument("--model", type=Path, help="branch weights JSON (default: shipped)")
    gate.add_argument("--profile", type=Path, help="energy profile (default: shipped)")
    gate.add_argument("--steps", type=int, default=3000, help="optimiser steps (default 3000)")
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params_argument(gate)


def _validate(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    for name in ("epochs", "batch_size", "every"):
        if getattr(args, name) < 1:
            raise UsageError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    return bag_paths(args.data), bag_paths(args.val)


def run(args: argparse.Namespace) -> int:
    if args.target == "detector":
        return run_detector(args)
    if args.target == "gate":
        from dynfusion_ros.train.gate_command import run_gate

        return run_gate(args)
    try:
        train_bags, val_bags = _validate(args)
        values = sensor_values(args)
    except UsageError as error:
        print(f"dynfusion train: error: {error}", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from dynfusion_ros.core.branches import DetectorConfig, save_weights
    from dynfusion_ros.core.branches.network import BranchNetwork
    from dynfusion_ros.train.branches import TrainSettings, train
    from dynfusion_ros.train.dataset import load_dataset
    from dynfusion_ros.train.report import plot_training

    if args.threads:
        torch.set_num_threads(args.threads)
    config = DetectorConfig()
    progress = not args.quiet
    print(f"reading {len(train_bags)} training bags (one frame in {args.every})")
    try:
        options = {"every": args.every, "progress": progress, "values": values}
        data = load_dataset(train_bags, config, **options)
        if val_bags:
            validation = load_dataset(val_bags, config, **options)
        else:
            data, validation = split_validation(data)
    except (UsageError, ValueError) as error:  # e.g. a bag without ground truth
        print(f"dynfusion train: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(data)} training frames, {len(validation)} validation frames")
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    network = BranchNetwork(config)

    def report(epoch: int, scores: dict[str, float]) -> None:
        shown = "  ".join(f"{name} {value:.3f}" for name, value in scores.items())
        print(f"epoch {epoch + 1}: validation mAP  {shown}", flush=True)

    log = train(network, data, settings, validation=validation, progress=progress, on_epoch=report)
    metadata = {
        "train_bags": [str(p) for p in train_bags],
        "val_bags": [str(p) for p in val_bags],
        "train_frames": len(data),
        "settings": vars(settings),
        "seconds": round(log.seconds, 1),
        "torch": torch.__version__,
        "final_validation_map": log.validation[-1] if log.validation else {},
    }
    path = save_weights(network, args.out / "branches.json", metadata)
    (args.out / "branches_training.json").write_text(
        json.dumps({"losses": log.losses, "validation": log.validation}, indent=1) + "\n"
    )
    plot = plot_training(log, args.out / "branches_training.png")
    print(
        f"trained in {log.seconds / 60:.1f} min; mean loss of the last 50 steps "
        f"{np.mean(log.losses[-50:]):.3f}"
    )
    print(f"wrote {path}, {path.with_suffix('.safetensors')} and {plot}")
    return 0


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
