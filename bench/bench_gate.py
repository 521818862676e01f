"""What deciding costs: context features and the gate's choice per frame, against running
the full configuration of the detector, in wall time here and in energy by the shipped
profile.

Target (issue 5): the gate and context features cost at most 2 % of the full
configuration's energy per frame. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_gate.py [--frames 40] [--scenario fog]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sim_frames import simulated_frames

from dynfusion_ros.core.context import ContextEstimator
from dynfusion_ros.core.detector.levels import FULL_CONFIGURATION
from dynfusion_ros.core.detector.runner import DetectorRunner
from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.core.gate import Gate, GateModel, Policy
from dynfusion_ros.eval.profiling import machine_description
from dynfusion_ros.resources import default_energy_profile, default_model_path


def median_ms(action, items) -> float:
    spent = []
    for item in items:
        start = time.perf_counter()
        action(item)
        spent.append((time.perf_counter() - start) * 1e3)
    return float(np.median(spent[3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scenario", default="fog")
    args = parser.parse_args()
    frames = simulated_frames(args.scenario, args.frames)
    profile = EnergyProfile.load(default_energy_profile())
    gate = Gate(profile, GateModel.load(default_model_path("gate.json")))
    runner = DetectorRunner.load(default_model_path("detector.json"))
    runner.warm_up()
    estimator = ContextEstimator()
    features = [estimator(frame) for frame in frames]
    budget = 0.5 * gate.full_energy_j()
    context_ms = median_ms(ContextEstimator(), frames)
    gate_ms = median_ms(lambda x: gate.decide(x, Policy("dynamic"), budget), features)
    full_ms = median_ms(lambda frame: runner.run(frame, FULL_CONFIGURATION), frames)
    print(f"machine: {machine_description()}, {len(frames)} frames ({args.scenario})")
    print(f"context features   {context_ms:6.2f} ms")
    count = len(gate.configurations)
    print(f"gate decision      {gate_ms:6.2f} ms  ({count} configurations, budget 50 %)")
    print(f"full detector      {full_ms:6.2f} ms")
    share = (context_ms + gate_ms) / full_ms
    print(f"deciding / full detector, wall time: {share:.1%}  (target <= 2 %)")
    deciding = profile.overhead_j.get("context", 0.0) + profile.overhead_j.get("gate", 0.0)
    overhead = deciding / gate.full_energy_j()
    print(
        f"deciding / full detector, energy profile ({profile.measured.get('meter')}): "
        f"{overhead:.1%}  (target <= 2 %)"
    )


if __name__ == "__main__":
    main()
