"""`dynfusion simulate`: arguments, validation and the run, for the CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynfusion_ros.command_args import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="mixed", help="preset scenario (see --list); default: mixed"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="length of the drive (default 60)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: the same seed gives the same bag (default 0)",
    )
    parser.add_argument(
        "--out", type=Path, help="rosbag2 folder to write (must not exist unless --overwrite)"
    )
    parser.add_argument(
        "--storage",
        choices=("mcap", "sqlite3"),
        default="mcap",
        help="bag storage plugin (default mcap)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        metavar="DIR",
        help="also write preview PNGs (camera, BEV, contact sheet) here",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    parser.add_argument(
        "--suite",
        metavar="NAME",
        help="write every drive of a named suite (train, heldout, heldout_60s, tiny) as "
        "<out>/<drive>; "
        "drives already there are kept, so an interrupted suite resumes",
    )
    parser.add_argument("--list", action="store_true", help="print the preset scenarios and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _validate(args: argparse.Namespace):
    from dynfusion_ros.sim.bag import check_output
    from dynfusion_ros.sim.scenario import preset

    if args.out is None:
        raise UsageError("--out is required (the bag folder to write)")
    if args.suite is not None:
        from dynfusion_ros.sim.suites import suite

        try:
            return suite(args.suite)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if not args.duration > 0 or args.duration > 3600:
        raise UsageError(f"--duration must be in (0, 3600] seconds, got {args.duration:g}")
    try:
        scenario = preset(args.scenario)
        check_output(args.out, args.overwrite)
        if args.preview is not None:
            check_output(args.preview / "probe", overwrite=True)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    return scenario


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.sim.scenario import PRESETS

    if args.list:
        width = max(map(len, PRESETS))
        for name, scenario in PRESETS.items():
            print(f"{name:<{width}}  {scenario.description}")
        return 0
    try:
        scenario = _validate(args)
    except UsageError as error:
        print(f"dynfusion simulate: error: {error}", file=sys.stderr)
        return 2
    if args.suite is not None:
        return _write_suite(args, scenario)
    from dynfusion_ros.sim.drive import Simulation

    return _write_one(args, Simulation(scenario, args.duration, args.seed), args.out)


def _write_suite(args: argparse.Namespace, drives) -> int:
    from dynfusion_ros.sim.drive import Simulation
    from dynfusion_ros.sim.scenario import preset

    for number, drive in enumerate(drives, start=1):
        out = args.out / drive.name
        if (out / "metadata.yaml").exists():
            print(f"[{number}/{len(drives)}] {out} exists, kept")
            continue
        print(f"[{number}/{len(drives)}] {drive.preset}, seed {drive.seed}, {drive.duration_s:g} s")
        sim = Simulation(preset(drive.preset), drive.duration_s, drive.seed)
        _write_one(args, sim, out)
    return 0


def _write_one(args: argparse.Namespace, sim, out: Path) -> int:
    from dynfusion_ros.sim import preview
    from dynfusion_ros.sim.bag import write_drive

    chosen = preview.preview_indices(sim) if args.preview else set()
    kept = []
    summary = write_drive(
        sim,
        out,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=not args.quiet,
        on_frame=lambda frame: kept.append(frame) if frame.index in chosen else None,
    )
    megabytes = summary.size_bytes / 1e6
    print(
        f"wrote {summary.path} ({args.storage}): {summary.frames} frames, "
        f"{summary.duration_s:g} s of drive, {sim.ego.distance_m:.0f} m driven"
    )
    per_minute = megabytes / (summary.duration_s / 60.0)
    print(f"  size {megabytes:.1f} MB ({per_minute:.0f} MB per minute of drive)")
    speed = summary.duration_s / summary.wall_s
    print(f"  simulated in {summary.wall_s:.1f} s ({speed:.2f}x real time)")
    for topic, count in sorted(summary.messages.items()):
        print(f"  {topic:<24} {count:>6} messages")
    if args.preview is not None:
        paths = [p for frame in kept for p in preview.save_frame(frame, sim, args.preview)]
        paths.append(preview.contact_sheet(sim.seed, args.preview))
        print(f"previews: {len(paths)} PNGs in {args.preview}")
    return 0
