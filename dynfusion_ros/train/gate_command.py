"""`dynfusion train gate`: record the detector's outputs on labelled bags, fit, write the
gate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dynfusion_ros import strict_json
from dynfusion_ros.command_args import UsageError, bag_paths, sensor_values, shown_path
from dynfusion_ros.resources import default_energy_profile, default_model_path


def _record(args: argparse.Namespace, bags: list[Path]):
    from dynfusion_ros.core.detector.runner import DetectorRunner
    from dynfusion_ros.eval.records import cached_record, record_configurations

    values = sensor_values(args)
    record = cached_record(args.record, bags, values)
    if record is not None:
        print(f"using the recorded detector outputs in {args.record} ({len(record)} frames)")
        return record
    runner = DetectorRunner.load(args.model or default_model_path("detector.json"))
    print(f"running every configuration on one frame in {args.every} of {len(bags)} bags")
    progress = not args.quiet
    record = record_configurations(runner, bags, every=args.every, progress=progress, values=values)
    record.save(args.record)
    return record


def run_gate(args: argparse.Namespace) -> int:
    from dynfusion_ros.core.detector.weights import WeightsError
    from dynfusion_ros.core.energy import EnergyProfile
    from dynfusion_ros.train.gate import GateSettings, fit_gate

    try:
        if args.every < 1 or args.steps < 1:
            raise UsageError("--every and --steps must be at least 1")
        bags = bag_paths(args.data)
        profile = EnergyProfile.load(args.profile or default_energy_profile())
        record = _record(args, bags)
    except (UsageError, ValueError, WeightsError) as error:
        print(f"dynfusion train: error: {error}", file=sys.stderr)
        return 2
    settings = GateSettings(steps=args.steps, seed=args.seed)
    model, report = fit_gate(record, profile, settings)
    model.metadata = {
        "train_bags": [str(b) for b in bags],
        "every": args.every,
        "settings": vars(settings),
        "report": vars(report),
        "energy_profile": shown_path(profile.source),
    }
    path = model.save(args.out / "gate.json")
    text = strict_json.dumps(vars(report), indent=2)
    (args.out / "gate_training.json").write_text(text + "\n")
    print(
        f"{report.train_frames} training / {report.val_frames} validation frames, "
        f"{report.seconds:.0f} s; validation: quality MAE {report.val_mae:.3f}, "
        f"context accuracy {report.context_accuracy:.1%}"
    )
    print(
        "regret (true quality lost by choosing on predictions) at budget shares: "
        + ", ".join(
            f"{k} {v:.3f}" if np.isfinite(v) else f"{k} - (no configuration fits)"
            for k, v in report.regret.items()
        )
    )
    shares = list(report.best_static_map)
    print(
        "validation nuScenes mAP of dynamic at each blend of dataset mAP / tie margin /"
        " context shrinkage (frames), and of the best static configuration that fits:"
    )
    print("  blend/margin/shrink " + "  ".join(f"{share:>5}" for share in shares))
    for name, row in [*report.blend_map.items(), ("static", report.best_static_map)]:
        print(f"  {name:<19} " + "  ".join(f"{100 * row[s]:5.1f}" for s in shares))
    print(
        f"chosen: blend {report.blend:g}, tie margin {report.tie_margin:g}, context "
        f"shrinkage {report.shrink_frames} frames"
    )
    print(
        f"tracks lose {report.hold_penalty:.3f} of per-frame quality for each frame they"
        " predict beyond the first"
    )
    print(f"wrote {path} and {path.with_suffix('.safetensors')}")
    return 0
