"""Test-session isolation for anything that touches DDS.

Every test session gets its own ROS domain and keeps discovery on this host, so parallel
sessions (and other ROS users on the network) never see each other's traffic, and uses
the package's Fast DDS transports. Set before rclpy is initialised anywhere; child
processes inherit it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from dynfusion_ros.ros.dds import use_package_transports

os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
use_package_transports()  # what `dynfusion run/replay/record` use: large-message shared memory


@pytest.fixture(scope="session")
def simulate_bag(tmp_path_factory):
    """Simulate a short drive of a preset into a fresh folder; returns the bag path."""
    from dynfusion_ros.sim.bag import write_drive
    from dynfusion_ros.sim.drive import Simulation
    from dynfusion_ros.sim.scenario import preset

    def simulate(name: str, duration_s: float, seed: int):
        out = tmp_path_factory.mktemp(name) / "bag"
        write_drive(Simulation(preset(name), duration_s, seed), out, progress=False)
        return out

    return simulate


@pytest.fixture(scope="session")
def clear_bag(simulate_bag):
    """1.5 s of a clear drive: 15 labelled frames with every sensor."""
    return simulate_bag("clear", 1.5, 11)


@pytest.fixture(scope="session")
def clear_frames(clear_bag):
    from dynfusion_ros.ros.bag_frames import read_frames

    return list(read_frames(clear_bag))


@pytest.fixture(scope="session")
def devkit_score():
    """``tools/nuscenes_devkit_score.py``: our exports scored by nuscenes-devkit alone."""
    path = Path(__file__).resolve().parent.parent / "tools" / "nuscenes_devkit_score.py"
    spec = importlib.util.spec_from_file_location("nuscenes_devkit_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
