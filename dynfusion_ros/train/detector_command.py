"""`dynfusion train detector`: the fused detector on labelled bags, over every configuration."""

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

VALIDATED = (
    "camera+lidar+radar",
    "camera_half+lidar_early+radar",
    "camera",
    "lidar",
    "lidar_early",
    "radar",
    "camera+lidar_reuse+radar_reuse",
)
"""The configurations scored on the validation frames during training: full, the
cheap levels together, each stem alone, and reuse beside a running stem."""


def add_detector_arguments(targets) -> None:
    parser = targets.add_parser(
        "detector",
        help="train the fused detector (every stem, level and subset) on labelled bags",
        description="Train the stems, the fusion and the head on labelled (simulated) bags, "
        "every frame under a random configuration, and write <out>/detector.json + "
        "detector.safetensors, a training log and a plot.",
    )
    add_bags_argument(parser, "data/sim/train")
    parser.add_argument(
        "--val",
        type=Path,
        nargs="*",
        default=[],
        metavar="BAG",
        help="validation bags (default: one block of 20 frames in every 200 training frames)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    parser.add_argument(
        "--steps", type=int, default=6000, help="optimiser steps (default 6000, as shipped)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument(
        "--validate-every", type=int, default=2000, metavar="STEPS", help="default 2000"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params_argument(parser)


def _check(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    for name in ("steps", "batch_size", "validate_every"):
        if getattr(args, name) < 1:
            raise UsageError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    return bag_paths(args.data), bag_paths(args.val)


def run_detector(args: argparse.Namespace) -> int:
    try:
        train_bags, val_bags = _check(args)
        values = sensor_values(args)
    except UsageError as error:
        print(f"dynfusion train: error: {error}", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from dynfusion_ros.core.detector.config import DetectorConfig
    from dynfusion_ros.core.detector.levels import Configuration
    from dynfusion_ros.core.detector.network import FusedDetector
    from dynfusion_ros.core.detector.weights import save_detector
    from dynfusion_ros.train.command import split_validation
    from dynfusion_ros.train.dataset import load_dataset
    from dynfusion_ros.train.detector import DetectorTrainSettings, train_detector
    from dynfusion_ros.train.report import plot_training

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DetectorConfig()
    progress = not args.quiet
    print(f"reading {len(train_bags)} training bags (every frame: reuse needs neighbours)")
    try:
        options = {"progress": progress, "values": values}
        data = load_dataset(train_bags, config, **options)
        if val_bags:
            validation = load_dataset(val_bags, config, **options)
        else:
            data, validation = split_validation(data)
    except (UsageError, ValueError) as error:  # e.g. a bag without ground truth
        print(f"dynfusion train: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(data)} training frames, {len(validation)} validation frames")
    settings = DetectorTrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        validate_every=args.validate_every,
        seed=args.seed,
    )
    network = FusedDetector(config)

    def report(step: int, scores: dict[str, float]) -> None:
        shown = "  ".join(f"{name} {value:.3f}" for name, value in scores.items())
        print(f"step {step}: validation mAP  {shown}", flush=True)

    configurations = [Configuration.parse(text) for text in VALIDATED]
    log = train_detector(
        network,
        data,
        settings,
        validation=validation,
        configurations=configurations,
        progress=progress,
        on_validation=report,
    )
    metadata = {
        "train_bags": [str(p) for p in train_bags],
        "val_bags": [str(p) for p in val_bags],
        "train_frames": len(data),
        "settings": vars(settings),
        "seconds": round(log.seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "final_validation_map": log.validation[-1] if log.validation else {},
    }
    path = save_detector(network, args.out / "detector.json", metadata)
    history = {"losses": log.losses, "validation": log.validation, "steps": log.validation_steps}
    (args.out / "detector_training.json").write_text(json.dumps(history, indent=1) + "\n")
    plot = plot_training(log, args.out / "detector_training.png")
    print(
        f"trained in {log.seconds / 60:.1f} min; mean loss of the last 50 steps "
        f"{np.mean(log.losses[-50:]):.3f}"
    )
    print(f"wrote {path}, {path.with_suffix('.safetensors')} and {plot}")
    return 0
