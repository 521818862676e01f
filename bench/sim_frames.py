"""What the benchmarks share: frames of a short simulated drive, and the machine's name."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from dynfusion_ros.core.types import SensorFrame
from dynfusion_ros.ros.bag_frames import read_frames


def simulated_frames(scenario: str, count: int, seed: int = 3) -> list[SensorFrame]:
    """``count`` frames of a drive simulated by a child process (so its memory is not
    counted in the benchmark's own)."""
    with tempfile.TemporaryDirectory() as folder:
        bag = Path(folder) / "drive"
        command = [sys.executable, "-m", "dynfusion_ros.cli", "simulate", "--scenario", scenario]
        command += ["--duration", str(count / 10.0 + 1.0), "--seed", str(seed)]
        command += ["--out", str(bag), "--quiet"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return [labelled.frame for labelled in read_frames(bag)][:count]
