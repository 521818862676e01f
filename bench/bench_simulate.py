"""Simulation speed: seconds of wall time per second of drive, and bag size per minute.

Target (issue 3): 60 s of drive with every sensor at its rate (camera and lidar 10 Hz,
radar 20 Hz, IMU 200 Hz) in at most 60 s on the 2-core CI machine. Prints the time each
stage took per frame (from a second, instrumented pass over the first frames) and the
totals of a full run through `write_drive`; asserts nothing.

    .venv/bin/python bench/bench_simulate.py [--scenario mixed] [--duration 60] [--storage mcap]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from dynfusion_ros.sim.bag import write_drive
from dynfusion_ros.sim.drive import Simulation
from dynfusion_ros.sim.scenario import preset


def stage_times(scenario: str, seed: int, frames: int) -> dict[str, float]:
    """Median ms per frame of each sensor model, timed around the model calls."""
    sim = Simulation(preset(scenario), frames / 10.0 + 1.0, seed)
    timed: dict[str, list[float]] = {}
    for name in ("camera.render", "lidar.sweep", "radar.scan", "imu.measure"):
        owner_name, method = name.split(".")
        owner = getattr(sim, owner_name)
        original = getattr(owner, method)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            result = _original(*args, **kwargs)
            timed.setdefault(_name, []).append(time.perf_counter() - start)
            return result

        setattr(owner, method, wrapper)
    started = time.perf_counter()
    for k in range(frames):
        sim.frame(k)
    total = (time.perf_counter() - started) / frames
    per_frame = {name: 1000 * float(np.sum(v)) / frames for name, v in timed.items()}
    per_frame["whole frame"] = 1000 * total
    return per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("per frame (100 ms of drive), first 50 frames:")
    for name, ms in stage_times(args.scenario, args.seed, 50).items():
        print(f"  {name:<14} {ms:7.1f} ms")
    with tempfile.TemporaryDirectory() as folder:
        sim = Simulation(preset(args.scenario), args.duration, args.seed)
        summary = write_drive(sim, Path(folder) / "bench", storage=args.storage, progress=False)
    megabytes = summary.size_bytes / 1e6
    print(f"{args.duration:g} s '{args.scenario}' drive ({args.storage}), all sensors:")
    realtime = summary.duration_s / summary.wall_s
    per_minute = megabytes / (summary.duration_s / 60)
    print(f"  wall time      {summary.wall_s:7.1f} s  ({realtime:.2f}x real time)")
    print(f"  bag size       {megabytes:7.0f} MB ({per_minute:.0f} MB per minute)")
    print(f"  messages       {sum(summary.messages.values()):7d}")


if __name__ == "__main__":
    main()
