"""`dynfusion profile`: measure the energy of every detector option (a stem at a level; a
reuse option is the warp of remembered features; ``tracks`` is the prediction of the
object tracks), the head (with the tracks' update), the late fusion, each odometry
correction and the per-frame overhead on this machine, with a meter, and write the
energy profile the gate plans with.

Each component runs on the same frames many times between two meter readings, so that
whole-package meters (RAPL, rails) see enough energy to be meaningful. The odometry
keeps state from frame to frame, so it is measured differently: whole passes over the
frames in order, once with no correction (the IMU filter: overhead, it always runs)
and once per correction; a correction's price is what it adds to the filter alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from dynfusion_ros.command_args import UsageError, bag_paths
from dynfusion_ros.core.detector.runner import INFERENCE_THREADS
from dynfusion_ros.resources import ENERGY_PROFILE, default_model_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bag", type=Path, required=True, help="a labelled bag to take frames from"
    )
    parser.add_argument("--frames", type=int, default=50, help="frames to measure on (default 50)")
    parser.add_argument("--repeat", type=int, default=4, help="passes over the frames (default 4)")
    parser.add_argument(
        "--meter", default="auto", help="auto, model, rapl, nvml or jetson (default auto)"
    )
    parser.add_argument(
        "--watts",
        type=float,
        default=10.0,
        help="model meter: power of one fully busy CPU core (W), default 10",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the detector")
    parser.add_argument(
        "--threads",
        type=int,
        default=INFERENCE_THREADS,
        help="torch CPU threads, as the fusion node's detector_threads "
        f"(default {INFERENCE_THREADS})",
    )
    parser.add_argument("--model", type=Path, help="detector weights JSON (default: shipped)")
    parser.add_argument("--out", type=Path, default=ENERGY_PROFILE, help="profile to write")


def machine_description() -> str:
    """CPU model, core count and kernel, for the record of where a figure was measured."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _joules(meter, calls: list[Callable[[], object]], batch: int = 10) -> float:
    """Energy of one call: the median over batches of ``batch`` calls metered together.
    Batches amortise what spills past a call (torch's worker threads spin a while after
    an op, on the process's CPU time); the median drops batches hit by a shared
    machine's hiccups (steal time, page-fault storms)."""
    spent = []
    for start in range(0, len(calls) - batch + 1, batch):
        sample = meter.sample()
        for call in calls[start : start + batch]:
            call()
        spent.append(meter.joules_since(sample) / batch)
    return float(statistics.median(spent))


def _tracks_j(meter, detections: list, calls: int) -> tuple[float, float]:
    """(updating the object tracks with a frame's detections, predicting them to the
    next frame): the vehicle moves 1 m a frame, the objects stay in odom."""
    import numpy as np

    from dynfusion_ros.core.tracking import ObjectTracks

    tracks = ObjectTracks()
    period_ns = 100_000_000

    def update(step: int) -> None:
        tracks.update(detections, np.array([float(step), 0.0, 0.0]), step * period_ns)

    update_j = _joules(meter, [lambda i=i: update(i) for i in range(calls)])
    ahead = np.array([float(calls), 0.0, 0.0])
    predict = [lambda: tracks.predict(ahead, calls * period_ns)] * calls
    return update_j, _joules(meter, predict)


def _odometry_j(meter, frames: list, repeat: int) -> tuple[float, dict[str, float]]:
    """(the IMU filter's energy per frame, each correction's), from ``repeat`` passes
    over consecutive frames, each pass metered whole and started afresh."""
    from dynfusion_ros.core.odometry.estimator import CORRECTIONS, OdometryEstimator

    def per_frame(corrections: tuple[str, ...]) -> float:
        estimator = OdometryEstimator()
        one_pass = [estimator.reset]  # time runs backwards into the next pass
        one_pass += [lambda f=f: estimator.step(f, corrections) for f in frames]
        per_call = _joules(meter, one_pass * repeat, batch=len(one_pass))
        return per_call * len(one_pass) / len(frames)

    filter_j = per_frame(())
    return filter_j, {name: max(per_frame((name,)) - filter_j, 0.0) for name in CORRECTIONS}


def measure(args: argparse.Namespace):
    import numpy as np
    import torch

    from dynfusion_ros.core.context import ContextEstimator
    from dynfusion_ros.core.detector.levels import CHOICE_NAMES, OPTIONS, STEMS, TRACKS
    from dynfusion_ros.core.detector.runner import DetectorRunner
    from dynfusion_ros.core.energy import EnergyProfile, make_meter
    from dynfusion_ros.core.fusion import fuse
    from dynfusion_ros.core.gate import SINGLE_STEMS, Gate, GateModel, Policy
    from dynfusion_ros.ros.bag_frames import read_frames

    meter = make_meter(args.meter, watts=args.watts)
    runner = DetectorRunner.load(
        args.model or default_model_path("detector.json"), device=args.device, threads=args.threads
    )
    frames = []
    for labelled in read_frames(bag_paths([args.bag])[0]):
        if all(labelled.frame.available(stem) for stem in STEMS):
            frames.append(labelled.frame)
        if len(frames) == args.frames:
            break
    if not frames:
        raise UsageError(f"{args.bag}: no frame has camera, lidar and radar data to measure on")
    passes = [frame for _ in range(args.repeat) for frame in frames]
    runner.warm_up()
    options_j, features = {}, {}
    for name, option in OPTIONS.items():
        if option.runs_stem:
            options_j[name] = _joules(
                meter, [lambda f=f, o=option: runner.stem_features(f, o) for f in passes]
            )
    moved = np.array([1.0, 0.0, 0.02])  # reuse: the last features warped by 1 m, 0.02 rad
    for stem in STEMS:
        features[stem.value] = runner.stem_features(frames[0], OPTIONS[stem.value])
        runner.memory.remember(stem.value, features[stem.value], np.zeros(3), 0)
        recall = [lambda s=stem.value: runner.memory.recall(s, moved, 100_000_000)]
        options_j[f"{stem.value}_reuse"] = _joules(meter, recall * len(passes))
    head_j = {"fused": _joules(meter, [lambda: runner.head_detections(features)] * len(passes))}
    update_j, options_j[TRACKS] = _tracks_j(meter, runner.head_detections(features), len(passes))
    head_j["fused"] += update_j
    singles = {c.text: runner.run(frames[0], c).detections for c in SINGLE_STEMS}
    head_j["late_fusion"] = _joules(meter, [lambda: fuse(singles)] * len(passes))
    estimator = ContextEstimator()
    context_j = _joules(meter, [lambda f=f: estimator(f) for f in passes])
    model_path = default_model_path("gate.json")
    model = GateModel.load(model_path) if model_path.exists() else None
    gate = Gate(EnergyProfile(options_j, head_j), model)
    observed = [estimator(f) for f in passes]
    gate_j = _joules(meter, [lambda x=x: gate.decide(x, Policy("dynamic"), None) for x in observed])
    filter_j, odometry_j = _odometry_j(meter, frames, args.repeat)
    measured = {
        "machine": machine_description(),
        "meter": meter.name,
        "model_watts_per_core": args.watts if meter.name == "model" else None,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "calls_per_component": len(passes),
        "bag": str(args.bag),
        "date": datetime.date.today().isoformat(),
    }
    overhead = {"context": context_j, "gate": gate_j, "imu_filter": filter_j}

    def rounded(table: dict[str, float]) -> dict[str, float]:
        return {k: float(np.round(v, 6)) for k, v in table.items()}

    return EnergyProfile(
        {name: rounded(options_j)[name] for name in CHOICE_NAMES},
        rounded(head_j),
        rounded(overhead),
        rounded(odometry_j),
        measured=measured,
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.frames * args.repeat < 10:
            raise UsageError("--frames x --repeat must be at least 10 (calls per component)")
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        if not args.watts > 0:
            raise UsageError(f"--watts must be positive, got {args.watts}")
        profile = measure(args)
    except (UsageError, ValueError, RuntimeError) as error:
        print(f"dynfusion profile: error: {error}", file=sys.stderr)
        return 2
    from dynfusion_ros.core.detector.levels import FULL_CONFIGURATION
    from dynfusion_ros.core.gate import SINGLE_STEMS

    profile.save(args.out)
    full = profile.run_energy_j([FULL_CONFIGURATION])
    print(f"meter {profile.measured['meter']} on {profile.measured['machine']}")
    for table in ("options_j", "head_j", "overhead_j", "odometry_j"):
        values = getattr(profile, table)
        print(f"{table[:-2]:<9}" + "  ".join(f"{k} {1e3 * v:.2f} mJ" for k, v in values.items()))
    print(
        f"full configuration: {1e3 * full:.2f} mJ per frame, overhead "
        f"{100 * profile.overhead_total_j / full:.1f}% of it; late fusion of the stems "
        f"alone: {1e3 * profile.run_energy_j(SINGLE_STEMS):.2f} mJ"
    )
    print(f"wrote {args.out}")
    return 0
