"""Branch latency and memory: per stem and per head at batch 1, all branches together,
radar alone, and the peak resident memory with every branch loaded.

Targets (issue 4): all branches together at most 80 ms per frame, radar alone at most
5 ms, peak resident memory at most 1.5 GB. Frames come from a short simulated drive
(written by a child process, so its memory is not counted here); timings are medians
over the frames after a warm-up. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_branches.py [--model models/branches.json] [--frames 40]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from sim_frames import simulated_frames

from dynfusion_ros.core.branches import BRANCHES, BranchRunner
from dynfusion_ros.eval.profiling import machine_description
from dynfusion_ros.resources import default_model_path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_path("branches.json"))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scenario", default="clear")
    args = parser.parse_args()
    frames = simulated_frames(args.scenario, args.frames)
    before = peak_rss_mb()
    runner = BranchRunner.load(args.model)
    names = list(BRANCHES)
    stem_ms: dict[str, list[float]] = {}
    head_ms: dict[str, list[float]] = {}
    total_ms, radar_ms = [], []
    warm_up = 3
    for number, frame in enumerate(frames):
        start = time.perf_counter()
        outputs = runner.run(frame, names)
        elapsed = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        runner.run(frame, ["radar"])
        radar_elapsed = (time.perf_counter() - start) * 1e3
        if number < warm_up:
            continue
        total_ms.append(elapsed)
        radar_ms.append(radar_elapsed)
        for key, value in outputs.stem_ms.items():
            stem_ms.setdefault(key, []).append(value)
        for key, value in outputs.head_ms.items():
            head_ms.setdefault(key, []).append(value)
    print(
        f"machine: {machine_description()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, batch 1, "
        f"{len(total_ms)} frames ({args.scenario})"
    )
    print(f"{'component':<20}{'median ms':>10}{'p90 ms':>9}")
    for kind, table in (("stem", stem_ms), ("head", head_ms)):
        for name, values in table.items():
            label = f"{kind} {name}"
            print(f"{label:<20}{np.median(values):>10.2f}{np.percentile(values, 90):>9.2f}")
    print(
        f"{'all branches':<20}{np.median(total_ms):>10.2f}{np.percentile(total_ms, 90):>9.2f}"
        "   (target <= 80 ms)"
    )
    print(
        f"{'radar alone':<20}{np.median(radar_ms):>10.2f}{np.percentile(radar_ms, 90):>9.2f}"
        "   (target <= 5 ms)"
    )
    print(
        f"peak resident memory: {peak_rss_mb():.0f} MB with every branch loaded and run "
        f"({before:.0f} MB before loading the network; target <= 1536 MB)"
    )


if __name__ == "__main__":
    main()
