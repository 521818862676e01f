"""End-to-end latency of the nodes over DDS: a simulated drive replayed into `dynfusion
run` at 1x, 2x and 4x its rate, the detections recorded.

Latency is wall time from a frame's moment in the replay (when its stamp came round) to
the detections being recorded, so it includes waiting for the frame's sensors (the
simulated lidar arrives 55 ms after the frame stamp), the selection, the branches,
fusion and two DDS hops. Frames lost: ground-truth frames with no detections published.

Target (issue 6): at 1x with policy `all`, p99 at most 100 ms and no frame lost.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_nodes.py [--drive data/demo/drive] [--policy all]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dynfusion_ros.eval.profiling import machine_description
from dynfusion_ros.eval.recording import TOPICS, Recording
from dynfusion_ros.ros.dds import use_package_transports
from dynfusion_ros.ros.demo import simulate_demo_drive
from dynfusion_ros.ros.processes import replay_through_nodes


def replay_once(node, drive: Path, rate: float, policy: str, work: Path) -> dict:
    out = work / f"rate{rate:g}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start_bag, start_wall = replay_through_nodes(
        node,
        drive,
        out,
        overrides=[f"policy:={policy}", "score_threshold:=0.0"],
        topics=[TOPICS["detections"], TOPICS["truth"]],
        rate=rate,
        log_sim_time=False,  # system time, to compare with when each frame came round
    )
    recording = out / "recording"
    result = Recording.read(recording)
    frames = result.frame_stamps()
    latency = []
    for stamp in frames:
        published = result.published(stamp)
        if published is not None:
            due_wall = start_wall + (published - start_bag) / rate
            latency.append((result.detections[published][1] - due_wall) / 1e6)
    lost = len(frames) - len(latency)
    return {
        "rate": rate,
        "frames": len(frames),
        "lost": lost,
        "p50": float(np.percentile(latency, 50)) if latency else float("nan"),
        "p99": float(np.percentile(latency, 99)) if latency else float("nan"),
    }


def main() -> None:
    import rclpy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, default=Path("data/demo/drive"))
    parser.add_argument("--policy", default="all")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = parser.parse_args()
    simulate_demo_drive(args.drive)  # the demo's drive, simulated once if missing
    use_package_transports()
    rclpy.init()
    node = rclpy.create_node("bench_nodes")
    print(f"machine: {machine_description()}")
    print(f"drive: {args.drive}, policy {args.policy}")
    with tempfile.TemporaryDirectory() as work:
        for rate in args.rates:
            r = replay_once(node, args.drive, rate, args.policy, Path(work))
            print(
                f"rate {r['rate']:g}x: latency p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; "
                f"frames lost {r['lost']} of {r['frames']} ({100 * r['lost'] / r['frames']:.1f} %)"
            )
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
