"""Detector latency and memory: every option (a stem at a level; reuse is the warp) and
the fusion and head at batch 1, the full configuration, the cheapest configurations,
tracks, the late baseline, and the peak resident memory.

Targets (issue 23): the full configuration costs no more than the six-branch `all`
(31 ms a frame on 2 cores); radar alone at most 5 ms (issue 4); peak resident memory at
most 1.5 GB. Frames come from a short simulated drive (written by a child process, so
its memory is not counted here); timings are medians over the frames after a warm-up,
reuse moved by the true motion. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_detector.py [--model models/detector.json] [--frames 40]
        [--threads 1]

Run as the nodes run: torch at ``--threads`` (the fusion node's ``detector_threads``)
and glibc keeping freed memory.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from sim_frames import simulated_frames

from dynfusion_ros.core.detector.levels import (
    FULL_CONFIGURATION,
    TRACKS_CONFIGURATION,
    Configuration,
)
from dynfusion_ros.core.detector.runner import INFERENCE_THREADS, DetectorRunner
from dynfusion_ros.core.fusion import fuse
from dynfusion_ros.core.gate import SINGLE_STEMS
from dynfusion_ros.eval.profiling import machine_description
from dynfusion_ros.resources import default_model_path
from dynfusion_ros.ros.realtime import keep_freed_memory

SHOWN = ("camera_half+lidar_early+radar", "camera_reuse+lidar+radar", "lidar_early", "radar")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_path("detector.json"))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scenario", default="clear")
    parser.add_argument("--threads", type=int, default=INFERENCE_THREADS)
    args = parser.parse_args()
    keep_freed_memory()
    frames = simulated_frames(args.scenario, args.frames)
    before = peak_rss_mb()
    runner = DetectorRunner.load(args.model, threads=args.threads)
    runner.warm_up()
    option_ms: dict[str, list[float]] = {}
    head_ms, total_ms = [], {}
    # reuse first: it reads the previous frame's full-level features, which the full
    # configuration (run after it) then replaces with this frame's
    configurations = sorted(
        [FULL_CONFIGURATION, *map(Configuration.parse, SHOWN)],
        key=lambda c: c.runs == c.stems,
    )
    reused = Configuration.parse("camera_reuse+lidar_reuse+radar_reuse")
    for number, frame in enumerate(frames):
        pose = np.array([0.8 * number, 0.0, 0.0])  # 8 m/s at 10 Hz: reuse moves by it
        timed = {}
        start = time.perf_counter()
        runner.run(frame, TRACKS_CONFIGURATION, pose)  # the last frame's, predicted
        timed["tracks"] = (time.perf_counter() - start) * 1e3
        warps = runner.run(frame, reused, pose).option_ms if number else {}
        for configuration in configurations:
            start = time.perf_counter()
            runner.run(frame, configuration, pose)
            timed[configuration.text] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        fuse({c.text: runner.run(frame, c, pose).detections for c in SINGLE_STEMS})
        timed["late"] = (time.perf_counter() - start) * 1e3
        outputs = runner.run(frame, FULL_CONFIGURATION, pose)  # what the next frame reuses
        runner.follow(frame, outputs.detections, pose)  # and tracks
        if number < 3:
            continue
        for name, value in timed.items():
            total_ms.setdefault(name, []).append(value)
        for key, value in (outputs.option_ms | warps).items():
            option_ms.setdefault(key, []).append(value)
        head_ms.append(outputs.head_ms)
        for option in ("camera_half", "lidar_early"):
            start = time.perf_counter()
            runner.stem_features(frame, Configuration.parse(option).options[0])
            option_ms.setdefault(option, []).append((time.perf_counter() - start) * 1e3)
    print(
        f"machine: {machine_description()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, batch 1, "
        f"{len(head_ms)} frames ({args.scenario})"
    )
    print(f"{'component':<34}{'median ms':>10}{'p90 ms':>9}")
    for name, values in option_ms.items():
        print(f"{'option ' + name:<34}{np.median(values):>10.2f}{np.percentile(values, 90):>9.2f}")
    print(f"{'fusion and head':<34}{np.median(head_ms):>10.2f}{np.percentile(head_ms, 90):>9.2f}")
    targets = {FULL_CONFIGURATION.text: "   (six-branch all: 31 ms)", "radar": "   (<= 5 ms)"}
    for name, values in total_ms.items():
        label = f"{'run ' + name:<34}{np.median(values):>10.2f}{np.percentile(values, 90):>9.2f}"
        print(label + targets.get(name, ""))
    print(
        f"peak resident memory: {peak_rss_mb():.0f} MB with the detector loaded and run "
        f"({before:.0f} MB before loading it; target <= 1536 MB)"
    )


if __name__ == "__main__":
    main()
