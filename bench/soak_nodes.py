"""Soak: both nodes, each in a process of its own, fed one drive over and over (the
clock jumps back at every loop, so each loop also exercises the reset), their memory
sampled throughout.

Reported per node: resident memory (RSS) when the replay starts, after the first loop
(warm-up: models, caches, the lidar map, the allocator's pools) and at the end, and the
growth after warm-up in MB per minute of replay, two ways: the least-squares slope of
RSS over the samples (with its standard error), and the growth of the peak RSS
(VmHWM). RSS swings by a few MB as the allocator hands pages back and takes them again,
which over a few minutes moves the slope by about 1 MB/min either way; a leak raises
the peak as steadily as the slope, a swing does not. Per loop, the detections
published. Target (issue 22): under 1 MB/min.

    .venv/bin/python bench/soak_nodes.py [--drive DRIVE] [--loops 5] [--rate 1.0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from fuzz_nodes import NODES, FuzzRun  # the same harness: nodes, player, listener

SOAK_DRIVE = Path("data/soak/drive")
SOAK_SCENARIO = ("mixed", 60.0, 11)  # scenario, seconds, seed
SAMPLE_S = 2.0


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set size of a process (MB), from /proc; ``field`` VmHWM: its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """RSS of each node every SAMPLE_S, on a thread: (seconds since start, MB) lists."""

    def __init__(self, processes: dict) -> None:
        self.processes = processes
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        self.peaks: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
        self.started = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            for name, process in self.processes.items():
                if process.poll() is None:
                    now = time.monotonic() - self.started
                    self.samples[name].append((now, rss_mb(process.pid)))
                    self.peaks[name].append((now, rss_mb(process.pid, "VmHWM")))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def growth_mb_per_min(samples: list[tuple[float, float]], after_s: float) -> tuple[float, float]:
    """Least-squares slope of RSS over time after ``after_s``, and its standard error
    (MB per minute)."""
    kept = np.array([(t, mb) for t, mb in samples if t >= after_s])
    if len(kept) < 4:
        return float("nan"), float("nan")
    (slope, _), covariance = np.polyfit(kept[:, 0], kept[:, 1], 1, cov=True)
    return float(slope * 60.0), float(np.sqrt(covariance[0, 0]) * 60.0)


def peak_growth_mb_per_min(peaks: list[tuple[float, float]], after_s: float, end_s: float) -> float:
    """Growth of the peak RSS from ``after_s`` to ``end_s`` (MB per minute)."""
    if end_s <= after_s:
        return float("nan")
    return (_at(peaks, end_s) - _at(peaks, after_s)) / (end_s - after_s) * 60.0


def _at(samples: list[tuple[float, float]], t: float) -> float:
    return min(samples, key=lambda sample: abs(sample[0] - t))[1] if samples else float("nan")


def soak(drive: Path, loops: int, rate: float, domain_id: int, logs: Path) -> int:
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.replay import Player

    run = FuzzRun(domain_id, logs, [])
    problems = []
    try:
        run.wait_for_nodes()
        sampler = Sampler(run.processes)
        loop_ends, detections = [], []
        with Reader(drive) as reader:
            player = Player(run.node, reader, None, clock=True)
            for loop in range(loops):
                before = run.outputs.counts["/dynfusion/detections"]
                for _ in player.play(reader, rate):
                    pass
                time.sleep(1.0)  # the last frames of the loop
                loop_ends.append(time.monotonic() - sampler.started)
                detections.append(run.outputs.counts["/dynfusion/detections"] - before)
                rss = ", ".join(
                    f"{name} {rss_mb(process.pid):.1f} MB"
                    for name, process in run.processes.items()
                    if process.poll() is None
                )
                print(
                    f"  loop {loop + 1}/{loops}: {detections[-1]} detection messages; RSS {rss}",
                    flush=True,
                )
        sampler.stop()
        crashed = run.crashed()
    finally:
        run.close()
    problems += [f"{name} died: {tail}" for name, tail in crashed.items()]
    if run.outputs.non_finite:
        problems.append(f"NaN or infinity published: {run.outputs.non_finite[:3]}")
    warm, end = loop_ends[0], loop_ends[-1]
    print(
        f"\n{'node':18} {'RSS start':>10} {'after loop 1':>13} {'end':>8}"
        f" {'slope after loop 1':>24} {'peak after loop 1, end':>24} {'peak growth':>14}"
    )
    for name in NODES:
        samples, peaks = sampler.samples[name], sampler.peaks[name]
        slope, error = growth_mb_per_min(samples, warm)
        peak_growth = peak_growth_mb_per_min(peaks, warm, end)
        print(
            f"{name:18} {_at(samples, 0):8.1f} MB {_at(samples, warm):10.1f} MB"
            f" {_at(samples, end):5.1f} MB {slope:+8.2f} +- {error:.2f} MB/min"
            f" {_at(peaks, warm):10.1f}, {_at(peaks, end):5.1f} MB {peak_growth:+8.2f} MB/min"
        )
        if not (slope < 1.0 or peak_growth < 1.0):
            problems.append(
                f"{name}: RSS grows {slope:+.2f} MB/min after warm-up, its peak {peak_growth:+.2f}"
            )
    minutes = (loop_ends[-1] - warm) / 60
    print(f"(growth over {minutes:.1f} min of replay after the first loop, at {rate:g}x)")
    print(f"detection messages per loop: {detections}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("no problems" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, default=SOAK_DRIVE)
    parser.add_argument("--loops", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--domain-id", type=int, default=78)
    parser.add_argument("--logs", type=Path, default=None, help="keep the nodes' logs here")
    args = parser.parse_args()
    if args.drive == SOAK_DRIVE and not (args.drive / "metadata.yaml").is_file():
        from dynfusion_ros.sim.bag import write_drive
        from dynfusion_ros.sim.drive import Simulation
        from dynfusion_ros.sim.scenario import preset

        scenario, seconds, seed = SOAK_SCENARIO
        print(f"simulating a {seconds:.0f} s '{scenario}' drive into {args.drive} (once)")
        args.drive.parent.mkdir(parents=True, exist_ok=True)
        write_drive(Simulation(preset(scenario), seconds, seed), args.drive, progress=True)
    elif not (args.drive / "metadata.yaml").is_file():
        parser.error(f"--drive {args.drive}: no rosbag2 there (see `dynfusion simulate`)")
    from dynfusion_ros.eval.profiling import machine_description

    print(f"machine: {machine_description()}")
    print(f"drive: {args.drive}, {args.loops} loops at {args.rate:g}x, nodes in own processes")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="soak_nodes_"))
    logs.mkdir(parents=True, exist_ok=True)
    return soak(args.drive, args.loops, args.rate, args.domain_id, logs)


if __name__ == "__main__":
    sys.exit(main())
